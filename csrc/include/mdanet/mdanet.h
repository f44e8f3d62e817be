/*
 * mdanet.h: the C API of the mdanet-sdk inference engine (libmdanet.so).
 *
 * Callable from C99, C++ and any language with a C FFI (ctypes, P/Invoke, JNA/Panama, cgo). Only C types cross
 * the boundary: opaque handles, fixed-width integers, float buffers owned by the caller, and NUL-terminated
 * strings owned by the library. No C++ exception and no exit() ever leaves a function of this header: every
 * failure is a status code, and mdanet_last_error() says what happened and what to do, in one sentence.
 *
 * A model is an artefact of `mdanet-sdk export --format torchscript` (any precision, --ops native or
 * reference). Opening it checks, before anything runs, what the Python loader checks: that it is an mdanet-sdk
 * artefact of a version this library reads, every member against its integrity record (SHA-256; damage, not
 * forgery), its metadata, and every operator of its program against the same allowlist (the same file compiled
 * in): a program that could touch files, the console or the process is refused.
 *
 * Threads: a handle may be shared between threads; calls on one handle are serialised (one forward at a time).
 * Open one handle per thread to run in parallel. mdanet_last_error() is per thread. CPU work uses libtorch's
 * intra-op threads, which follow OMP_NUM_THREADS (set it before the first call, e.g. on shared nodes).
 *
 * Memory: the caller owns every buffer it passes. Strings returned by the library stay valid until the handle
 * is closed (metadata) or forever (version, status names). mdanet_close(NULL) does nothing.
 *
 * Example (export/c/mdanet_segment.c is the complete program):
 *
 *     mdanet_model* model = NULL;
 *     if (mdanet_open("model.ts", "cpu", &model) != MDANET_OK) {
 *       fprintf(stderr, "error: %s\n", mdanet_last_error());
 *       return 1;
 *     }
 *     // volumes: float32, the modalities one after another, each X x Y x Z in NIfTI order (x fastest)
 *     if (mdanet_segment_volume(model, volumes, channels, x, y, z, affine, NULL, NULL, mask, NULL) != MDANET_OK)
 *       fprintf(stderr, "error: %s\n", mdanet_last_error());
 *     mdanet_close(model);
 */
#ifndef MDANET_MDANET_H
#define MDANET_MDANET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MDANET_EXPORT __declspec(dllexport)
#else
#define MDANET_EXPORT __attribute__((visibility("default")))
#endif

/* Version of this header's API. A library answers mdanet_api_version() >= the header's for the same major. */
#define MDANET_API_VERSION 2

/* What a call returned. MDANET_OK is 0; every other value is a failure explained by mdanet_last_error(). */
typedef enum mdanet_status {
  MDANET_OK = 0,
  MDANET_INVALID_ARGUMENT = 1,   /* a null pointer, a wrong size or count, an unknown device name */
  MDANET_FILE_ERROR = 2,         /* the artefact cannot be opened or read */
  MDANET_INVALID_ARTIFACT = 3,   /* not an mdanet-sdk TorchScript artefact, damaged, refused, or from a newer
                                    mdanet-sdk than this library reads */
  MDANET_UNAVAILABLE = 4,        /* what it needs is missing here: CUDA, that GPU, a TensorRT runtime */
  MDANET_RUNTIME_ERROR = 5,      /* the model failed on this input, or gave NaN/Inf (damaged weights) */
  MDANET_OUT_OF_MEMORY = 6,      /* host or device memory ran out */
  MDANET_INTERNAL_ERROR = 7      /* a bug of libmdanet: please report it with the message */
} mdanet_status;

/* An opened model. Opaque: only pointers to it exist outside the library. */
typedef struct mdanet_model mdanet_model;

/* --- library ------------------------------------------------------------------------------------------- */

/* Version of the mdanet-sdk release this library was built from, e.g. "0.9.0". */
MDANET_EXPORT const char* mdanet_version(void);
/* MDANET_API_VERSION of the library. */
MDANET_EXPORT int32_t mdanet_api_version(void);
/* Newest artefact layout (meta.json artifact_version) this library reads. */
MDANET_EXPORT int32_t mdanet_artifact_version(void);
/* Message of the last failed call on this thread ("" when none has failed yet), as errno: a successful call
   leaves it as it was. Valid until the next failed call on this thread. */
MDANET_EXPORT const char* mdanet_last_error(void);
/* Name of a status, e.g. "MDANET_INVALID_ARGUMENT"; "MDANET_UNKNOWN_STATUS" for other values. */
MDANET_EXPORT const char* mdanet_status_name(mdanet_status status);
/* Keep the memory of freed CPU tensors in the process for the next call instead of handing it back to the
   kernel (glibc's malloc: large blocks from the heap, no trimming), as the Python Segmenter does on a CPU: each
   call then page-faults its activations once, not every time. Process-wide and permanent (it also changes how the
   rest of the program allocates); call it once, before the first model runs. The process keeps its peak memory
   until it exits. MDANET_UNAVAILABLE without glibc (nothing is changed). API version 2. */
MDANET_EXPORT mdanet_status mdanet_retain_cpu_memory(void);

/* --- models -------------------------------------------------------------------------------------------- */

/* Open the artefact at `path` on `device` ("cpu", "cuda" or "cuda:N"; NULL means "cpu") into *model.
   On failure *model is set to NULL. */
MDANET_EXPORT mdanet_status mdanet_open(const char* path, const char* device, mdanet_model** model);
/* Release a model (NULL, or a handle closed already: nothing). A call with a closed handle returns
   MDANET_INVALID_ARGUMENT; no call may run on the handle while it is being closed. */
MDANET_EXPORT void mdanet_close(mdanet_model* model);

/* Input slice shape (C, H, W): C modalities in channel order, H x W the model grid. */
MDANET_EXPORT mdanet_status mdanet_model_input_shape(const mdanet_model* model, int64_t* channels, int64_t* height,
                                                     int64_t* width);
/* Output classes K of the logits (2: background, lesion). */
MDANET_EXPORT mdanet_status mdanet_model_num_classes(const mdanet_model* model, int64_t* classes);
/* Name of input channel `index` (0 <= index < C), e.g. "dwi", "adc", "cbf". */
MDANET_EXPORT mdanet_status mdanet_model_modality(const mdanet_model* model, int64_t index, const char** name);
/* Batch range the artefact was exported for. mdanet_run_slices takes any batch: bigger ones run in chunks of
   `max`, smaller ones than `min` are zero-padded. */
MDANET_EXPORT mdanet_status mdanet_model_batch_range(const mdanet_model* model, int64_t* min, int64_t* opt,
                                                     int64_t* max);
/* Precision the artefact computes in: "fp32", "fp16" or "bf16". */
MDANET_EXPORT mdanet_status mdanet_model_precision(const mdanet_model* model, const char** precision);
/* Device the model runs on, e.g. "cpu", "cuda:0". */
MDANET_EXPORT mdanet_status mdanet_model_device(const mdanet_model* model, const char** device);
/* The artefact's preprocess.json (how volumes become slices: size, multiple, normalization, clip_percentiles)
   and meta.json (everything else), as JSON text. */
MDANET_EXPORT mdanet_status mdanet_model_preprocess_json(const mdanet_model* model, const char** json);
MDANET_EXPORT mdanet_status mdanet_model_meta_json(const mdanet_model* model, const char** json);

/* How a probability map becomes a mask (the settings of `mdanet-sdk segment --tta --threshold --min-size
   --max-adc-ratio`). */
typedef struct mdanet_postprocess {
  int32_t tta;           /* 1: average over the 4 in-plane flips (4x the model time); 0: no flips */
  double threshold;      /* a voxel is lesion when its probability is above this; in (0, 1) */
  int64_t min_size;      /* lesions of fewer voxels are removed (26-connectivity); 0 keeps all */
  double max_adc_ratio;  /* lesions whose median ADC is above this multiple of the parenchymal ADC are removed
                            (models with an adc input); 0 keeps all */
} mdanet_postprocess;

/* The post-processing the artefact recommends (chosen at training on held-out cases), what
   mdanet_segment_volume uses when given NULL. The bundled models recommend tta = 1 (4 forward passes per slice):
   pass settings with tta = 0 for a 4x faster, slightly less accurate run. */
MDANET_EXPORT mdanet_status mdanet_model_postprocess(const mdanet_model* model, mdanet_postprocess* settings);

/* Segment one case, as `mdanet-sdk segment --model ARTEFACT` segments its files: head mask (or brain_mask),
   normalisation, slices on the model grid, lesion probability, back to the native grid, post-processing.
   volumes: float32, the C modalities in mdanet_model_modality order, each an X x Y x Z volume in NIfTI voxel
            order (x fastest: value (c, x, y, z) at [x + X*(y + Y*(z + Z*c))]); NaN/Inf voxels count as 0, but
            a modality with more than 1 % Inf voxels (or values beyond 1e20) is refused as no image.
   affine: the 4 x 4 voxel-to-world matrix in mm, row-major (a NIfTI sform/qform; last row 0 0 0 1); it gives
           the voxel spacing and the orientation (volumes in any orientation are turned to RAS+ and the mask back).
   brain_mask: NULL (an automatic head mask), or uint8 X x Y x Z (non-zero = brain), same order.
   settings: NULL for the artefact's recommendation (mdanet_model_postprocess).
   mask: uint8 X x Y x Z written by the call (1 = lesion), same voxel order; probability: NULL, or float32
   X x Y x Z lesion probabilities. Both are left untouched when the call fails.
   An artefact exported before the volume pipeline existed gives MDANET_INVALID_ARTIFACT: export it again. */
MDANET_EXPORT mdanet_status mdanet_segment_volume(mdanet_model* model, const float* volumes, int64_t channels,
                                                  int64_t x, int64_t y, int64_t z, const double* affine,
                                                  const uint8_t* brain_mask, const mdanet_postprocess* settings,
                                                  uint8_t* mask, float* probability);

/* Logits of `batch` preprocessed slices.
   slices: float32 (batch, C, H, W), C-contiguous, slices_len = batch * C * H * W values.
   logits: float32 (batch, K, H, W) written by the call, logits_len = batch * K * H * W values. Left untouched
   when the call fails. */
MDANET_EXPORT mdanet_status mdanet_run_slices(mdanet_model* model, const float* slices, int64_t batch,
                                              int64_t slices_len, float* logits, int64_t logits_len);

#ifdef __cplusplus
}
#endif

#endif /* MDANET_MDANET_H */
