"""A Batch environment on a moto endpoint: role, network, a managed compute environment
and two job queues (on-demand, spot), all with unique names so tests can share a server.

``scripts/services/moto.sh`` starts the endpoints and writes ``.services/moto.env``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import read_env_file

MOTO_ENV = Path(__file__).resolve().parents[2] / ".services" / "moto.env"
CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


def moto_url(key: str = "MOTO_URL") -> str:
    """The endpoint URL moto.sh wrote, or skip saying what is missing."""
    if not MOTO_ENV.is_file():
        pytest.skip(f"moto endpoint not started: {MOTO_ENV} missing (run scripts/services/moto.sh)")
    url = read_env_file(MOTO_ENV).get(key)
    if not url:
        pytest.skip(
            f"{key} not in {MOTO_ENV}: moto.sh found no running dockerd (run scripts/services/dockerd.sh first)"
        )
    return url


def client(service: str, url: str) -> Any:
    return boto3.session.Session().client(service, endpoint_url=url, **CREDENTIALS)


@dataclass(frozen=True)
class BatchEnvironment:
    url: str
    queue: str
    spot_queue: str
    compute_environment: str
    role_arn: str


def make_environment(
    url: str, instance_types: list[str] | None = None, max_vcpus: int = 16
) -> BatchEnvironment:
    tag = uuid.uuid4().hex[:10]
    iam, ec2, batch = client("iam", url), client("ec2", url), client("batch", url)
    role = iam.create_role(RoleName=f"bridge-{tag}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName=f"bridge-{tag}")["InstanceProfile"][
        "Arn"
    ]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"bridge-{tag}", Description="bridge", VpcId=vpc)[
        "GroupId"
    ]
    ce = batch.create_compute_environment(
        computeEnvironmentName=f"bridge-ce-{tag}",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": max_vcpus,
            "desiredvCpus": 0,
            "instanceTypes": instance_types or ["c6i.large"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        },
        serviceRole=role,
    )["computeEnvironmentArn"]
    queues = []
    for name in (f"bridge-od-{tag}", f"bridge-spot-{tag}"):
        batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
        )
        queues.append(name)
    return BatchEnvironment(url, queues[0], queues[1], f"bridge-ce-{tag}", role)
