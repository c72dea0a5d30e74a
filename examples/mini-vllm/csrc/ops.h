#ifndef MINI_VLLM_OPS_H
#define MINI_VLLM_OPS_H

#include <stddef.h>

#ifndef MINI_VLLM_OPS_VERSION
#define MINI_VLLM_OPS_VERSION "unknown"
#endif

/* Return a + b. */
double vllm_add(double a, double b);

/* Write x / sqrt(mean(x^2) + eps) into out; returns 0 on success. */
int vllm_rms_norm(const double *x, double *out, size_t n, double eps);

#endif /* MINI_VLLM_OPS_H */
