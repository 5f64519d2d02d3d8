/* What one core does with vpdpbusd (512-bit), the numbers behind the int8 kernels' bounds:
 * independent accumulator chains (latency vs throughput), one 64-byte load per instruction from
 * L1, and the clock (a chain of dependent adds, one per cycle).
 *
 *     gcc -O2 -march=icelake-server benchmarks/vnni_throughput.c -o /tmp/vnni && /tmp/vnni
 *
 * (GCC 12 does not know -march=znver4; any -march with AVX512-VNNI builds it.)
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define ITERATIONS 100000000L
#define DOT(acc, x) acc = _mm512_dpbusd_epi32(acc, x, weights)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint8_t activations[16384] __attribute__((aligned(64)));

int main(void) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m512i x = _mm512_set1_epi32(3), weights = _mm512_set1_epi32(5);

    long adds = 1;
    double start = now();
    for (long i = 0; i < ITERATIONS; i++)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(adds));
    double ghz = ITERATIONS * 4 / (now() - start) / 1e9;
    printf("clock: %.2f GHz\n", ghz);

    start = now();
    for (long i = 0; i < ITERATIONS; i++) {
        DOT(a0, x); DOT(a1, x);
        __asm__ volatile("" ::"v"(x));
    }
    printf("2 chains: %.2f vpdpbusd per cycle\n", ITERATIONS * 2 / (now() - start) / 1e9 / ghz);

    start = now();
    for (long i = 0; i < ITERATIONS; i++) {
        DOT(a0, x); DOT(a1, x); DOT(a2, x); DOT(a3, x);
        __asm__ volatile("" ::"v"(x));
    }
    printf("4 chains: %.2f vpdpbusd per cycle\n", ITERATIONS * 4 / (now() - start) / 1e9 / ghz);

    for (int i = 0; i < (int)sizeof activations; i++) activations[i] = (uint8_t)i;
    long passes = ITERATIONS / 50;
    start = now();
    for (long i = 0; i < passes; i++) {
        for (int k = 0; k < 256; k += 8) {
            const uint8_t *p = activations + k * 64;
            DOT(a0, _mm512_load_si512(p)); DOT(a1, _mm512_load_si512(p + 64));
            DOT(a2, _mm512_load_si512(p + 128)); DOT(a3, _mm512_load_si512(p + 192));
            DOT(a4, _mm512_load_si512(p + 256)); DOT(a5, _mm512_load_si512(p + 320));
            DOT(a6, _mm512_load_si512(p + 384)); DOT(a7, _mm512_load_si512(p + 448));
        }
    }
    printf("8 chains, a 64-byte L1 load each: %.2f vpdpbusd per cycle\n", passes * 256 / (now() - start) / 1e9 / ghz);

    __m512i sum = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                   _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    return _mm512_reduce_add_epi32(sum) == 42 && adds == 0;
}
