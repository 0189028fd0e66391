/* A compute-bound kernel for comparing builds for different CPU targets: a degree-15
 * polynomial (Horner's rule) evaluated over an L1-resident array, many times.  It
 * vectorises, and uses fused multiply-adds where the target has them, so the width of
 * the target's vector unit shows directly in its speed.
 *
 * usage: horner [repeats]   prints "<seconds> <checksum>"
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 4096
#define DEGREE 16

static float xs[N], ys[N];

static void evaluate(const float *restrict x, float *restrict y, const float *restrict c) {
    for (int i = 0; i < N; i++) {
        float acc = c[0];
        for (int k = 1; k < DEGREE; k++) acc = acc * x[i] + c[k];
        y[i] = acc;
    }
}

int main(int argc, char **argv) {
    long repeats = argc > 1 ? atol(argv[1]) : 20000;
    float c[DEGREE];
    for (int k = 0; k < DEGREE; k++) c[k] = 1.0f / (float)(k + 1);
    for (int i = 0; i < N; i++) xs[i] = (float)i / (float)N;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double checksum = 0.0;
    for (long r = 0; r < repeats; r++) {
        evaluate(xs, ys, c);
        checksum += ys[r % N];
        xs[r % N] += 1e-7f; /* keep the work from being hoisted out of the loop */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%.6f %.6f\n", seconds, checksum);
    return 0;
}
