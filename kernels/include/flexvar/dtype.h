/* The element types of flexvar's kernels (framework-free). */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FLEXVAR_FLOAT32 = 0, FLEXVAR_BFLOAT16 = 1, FLEXVAR_FLOAT16 = 2 } flexvar_dtype_t;

#ifdef __cplusplus
}
#endif
