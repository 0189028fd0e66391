"""Fusion: object storage as a file system, at ``/fusion/s3/<bucket>/<key>`` on every node.

Modules, each with one job:

* ``store`` - the :class:`~fusion.store.ObjectStore` protocol; ``s3_store`` (boto3) and
  ``memory_store`` (tests) implement it; ``objects`` holds the plain data types.
* ``errors`` - typed errors and the one S3-code -> errno table.
* ``fs`` - the file-system logic, without FUSE; ``fuse_ops`` - the thin pyfuse3 adapter;
  ``inodes`` - the inode table; ``meta_cache`` - names and attributes with a TTL;
  ``listing`` - one open directory, a paginated LIST streamed to readdir;
  ``symlinks`` - how links are stored.
* ``prefetch`` - sequential read-ahead over ``object_source`` (ranged GETs through
  ``chunk_cache``, the bounded on-disk cache); ``small_files`` - fetching the small files
  that follow an opened one; ``writer`` - spooled multipart uploads.
* ``mount`` - mount in a background process (for the node agent); ``cli`` - ``fusion``.
* ``stage`` - copy-staging for nodes without FUSE, with the same paths.

``SEMANTICS.md`` states which POSIX behaviour is supported.
"""
