/*
 * mdanet_segment: segment one case with an MDANet TorchScript artefact through the C API (mdanet/mdanet.h).
 *
 *   mdanet_segment MODEL.ts MASK.nii IMAGE.nii... [--device cpu|cuda] [--brain-mask BRAIN.nii]
 *
 * IMAGE.nii: one uncompressed NIfTI-1 volume per modality, in the model's modality order (printed on a
 * mismatch; e.g. dwi then adc). MASK.nii: the lesion mask (uint8, 1 = lesion) on the images' grid, the mask
 * `mdanet-sdk segment --model MODEL.ts` writes. C99, no dependency but libmdanet.
 */
#define _POSIX_C_SOURCE 200809L /* stat() under -std=c99 */
#include <mdanet/mdanet.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nifti1_io.h"

static int usage(void) {
  fprintf(stderr, "usage: mdanet_segment MODEL.ts MASK.nii IMAGE.nii... [--device DEV] [--brain-mask BRAIN.nii]\n");
  return 2;
}

/* The modality names of the model, for messages. */
static void print_modalities(const mdanet_model* model, int64_t channels) {
  int64_t c;
  const char* name = NULL;
  fprintf(stderr, "the model reads %lld modalities, in this order:", (long long)channels);
  for (c = 0; c < channels; ++c) {
    if (mdanet_model_modality(model, c, &name) == MDANET_OK) fprintf(stderr, " %s", name);
  }
  fprintf(stderr, "\n");
}

/* Whether two voxel-to-world matrices agree within 1e-3 mm (the tolerance of mdanet-sdk segment). */
static int same_affine(const double* a, const double* b) {
  int k;
  for (k = 0; k < 16; ++k) {
    if (fabs(a[k] - b[k]) > 1e-3) return 0;
  }
  return 1;
}

/* Whether two paths name the same existing file (also through links): the mask must never replace an input. */
static int same_file(const char* a, const char* b) {
  struct stat sa, sb;
  if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int main(int argc, char** argv) {
  const char *model_path, *mask_path, *device = "cpu", *brain_path = NULL;
  const char* images[64];
  int n_images = 0, i, status = 1;
  nifti_volume volumes[64], brain;
  mdanet_model* model = NULL;
  int64_t channels = 0, h, w, voxels, lesion = 0, v;
  float* stacked = NULL;
  uint8_t *mask = NULL, *brain_bytes = NULL;
  char error[512];

  if (argc < 4) return usage();
  model_path = argv[1];
  mask_path = argv[2];
  for (i = 3; i < argc; ++i) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device = argv[++i];
    } else if (strcmp(argv[i], "--brain-mask") == 0 && i + 1 < argc) {
      brain_path = argv[++i];
    } else if (argv[i][0] == '-' || n_images == 64) {
      return usage();
    } else {
      images[n_images++] = argv[i];
    }
  }
  for (i = 0; i < n_images; ++i) {
    if (same_file(mask_path, images[i]) || (brain_path != NULL && same_file(mask_path, brain_path)) ||
        same_file(mask_path, model_path)) {
      fprintf(stderr, "error: the mask %s is an input file; choose another output name\n", mask_path);
      return 1;
    }
  }
  /* A program that only segments may keep freed memory for the next batch (no page faults of every batch's
     activations; MDANET_UNAVAILABLE without glibc, and nothing changes then). */
  if (strncmp(device, "cpu", 3) == 0) (void)mdanet_retain_cpu_memory();
  if (mdanet_open(model_path, device, &model) != MDANET_OK) {
    fprintf(stderr, "error: %s\n", mdanet_last_error());
    return 1;
  }
  mdanet_model_input_shape(model, &channels, &h, &w);
  if (channels != n_images) {
    fprintf(stderr, "error: %d image(s) given; ", n_images);
    print_modalities(model, channels);
    mdanet_close(model);
    return 1;
  }
  memset(volumes, 0, sizeof volumes);
  memset(&brain, 0, sizeof brain);
  for (i = 0; i < n_images; ++i) {
    if (nifti_read(images[i], &volumes[i], error, sizeof error) != 0) goto fail_with_message;
    if (memcmp(volumes[i].dim, volumes[0].dim, sizeof volumes[0].dim) != 0 ||
        !same_affine(volumes[i].affine, volumes[0].affine)) {
      snprintf(error, sizeof error, "%s is not on the grid of %s", images[i], images[0]);
      goto fail_with_message;
    }
  }
  voxels = volumes[0].dim[0] * volumes[0].dim[1] * volumes[0].dim[2];
  stacked = (float*)malloc((size_t)(voxels * channels) * sizeof(float));
  mask = (uint8_t*)malloc((size_t)voxels);
  if (stacked == NULL || mask == NULL) {
    snprintf(error, sizeof error, "out of memory");
    goto fail_with_message;
  }
  for (i = 0; i < n_images; ++i) memcpy(stacked + i * voxels, volumes[i].data, (size_t)voxels * sizeof(float));
  if (brain_path != NULL) {
    if (nifti_read(brain_path, &brain, error, sizeof error) != 0) goto fail_with_message;
    brain_bytes = (uint8_t*)malloc((size_t)voxels);
    if (brain_bytes == NULL || memcmp(brain.dim, volumes[0].dim, sizeof brain.dim) != 0 ||
        !same_affine(brain.affine, volumes[0].affine)) {
      snprintf(error, sizeof error, "%s is not on the images' grid", brain_path);
      goto fail_with_message;
    }
    for (v = 0; v < voxels; ++v) brain_bytes[v] = brain.data[v] != 0;
  }
  if (mdanet_segment_volume(model, stacked, channels, volumes[0].dim[0], volumes[0].dim[1], volumes[0].dim[2],
                            volumes[0].affine, brain_bytes, NULL, mask, NULL) != MDANET_OK) {
    snprintf(error, sizeof error, "%s", mdanet_last_error());
    goto fail_with_message;
  }
  if (nifti_write_mask(mask_path, &volumes[0], mask, error, sizeof error) != 0) goto fail_with_message;
  for (v = 0; v < voxels; ++v) lesion += mask[v];
  fprintf(stderr, "mdanet_segment: %lld x %lld x %lld voxels, %lld lesion voxels -> %s\n",
          (long long)volumes[0].dim[0], (long long)volumes[0].dim[1], (long long)volumes[0].dim[2],
          (long long)lesion, mask_path);
  status = 0;
  goto done;
fail_with_message:
  fprintf(stderr, "error: %s\n", error);
done:
  for (i = 0; i < n_images; ++i) nifti_free(&volumes[i]);
  nifti_free(&brain);
  free(stacked);
  free(mask);
  free(brain_bytes);
  mdanet_close(model);
  return status;
}
