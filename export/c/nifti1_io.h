/*
 * A minimal NIfTI-1 reader and writer for the C examples: single-file, uncompressed .nii, little-endian.
 * Not part of libmdanet: a pipeline that already reads NIfTI (niftilib, ITK, its own code) passes its arrays to
 * mdanet_segment_volume directly. Compressed files: `gunzip -k case.nii.gz` first.
 */
#ifndef MDANET_EXAMPLE_NIFTI1_IO_H
#define MDANET_EXAMPLE_NIFTI1_IO_H

#include <stdint.h>

typedef struct nifti_volume {
  unsigned char header[352]; /* the 348-byte header and the 4 extension bytes, as read */
  int64_t dim[3];            /* X, Y, Z */
  double affine[16];         /* voxel-to-world, row-major: sform, else qform, else nibabel's base affine */
  float* data;               /* X*Y*Z values, x fastest, scaled by scl_slope/scl_inter */
} nifti_volume;

/* Read a 3D volume (a 4th axis of length 1 is allowed). Returns 0, or -1 with a message in `error`. */
int nifti_read(const char* path, nifti_volume* volume, char* error, int error_size);
/* Write `mask` (X*Y*Z uint8, x fastest) on `like`'s grid and orientation to `path` (via a temporary file, so
   a failure leaves no partial file). Returns 0, or -1 with a message in `error`. */
int nifti_write_mask(const char* path, const nifti_volume* like, const uint8_t* mask, char* error, int error_size);
void nifti_free(nifti_volume* volume);

#endif
