/* See nifti1_io.h. Offsets are those of the NIfTI-1 standard header (nifti1.h). */
#include "nifti1_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int16_t i16(const unsigned char* h, int at) {
  int16_t v;
  memcpy(&v, h + at, sizeof v);
  return v;
}

static float f32(const unsigned char* h, int at) {
  float v;
  memcpy(&v, h + at, sizeof v);
  return v;
}

static int fail(char* error, int size, const char* message, const char* path) {
  snprintf(error, (size_t)size, "%s: %s", path, message);
  return -1;
}

/* The qform rotation (quaternion b, c, d), voxel sizes and offsets, as nibabel computes it. */
static void qform_affine(const unsigned char* h, double* a) {
  double b = f32(h, 256), c = f32(h, 260), d = f32(h, 264);
  double w = 1.0 - (b * b + c * c + d * d);
  double qfac = f32(h, 76) < 0 ? -1.0 : 1.0;
  double r[3][3];
  int i;
  w = w < 0 ? 0 : sqrt(w);
  r[0][0] = w * w + b * b - c * c - d * d;
  r[0][1] = 2 * (b * c - w * d);
  r[0][2] = 2 * (b * d + w * c);
  r[1][0] = 2 * (b * c + w * d);
  r[1][1] = w * w + c * c - b * b - d * d;
  r[1][2] = 2 * (c * d - w * b);
  r[2][0] = 2 * (b * d - w * c);
  r[2][1] = 2 * (c * d + w * b);
  r[2][2] = w * w + d * d - b * b - c * c;
  for (i = 0; i < 3; ++i) {
    a[4 * i + 0] = r[i][0] * f32(h, 80);
    a[4 * i + 1] = r[i][1] * f32(h, 84);
    a[4 * i + 2] = r[i][2] * f32(h, 88) * qfac;
    a[4 * i + 3] = f32(h, 268 + 4 * i);
  }
}

static void header_affine(const unsigned char* h, double* a) {
  int i, j;
  memset(a, 0, 16 * sizeof(double));
  a[15] = 1.0;
  if (i16(h, 254) > 0) { /* sform */
    for (i = 0; i < 3; ++i)
      for (j = 0; j < 4; ++j) a[4 * i + j] = f32(h, 280 + 16 * i + 4 * j);
  } else if (i16(h, 252) > 0) {
    qform_affine(h, a);
  } else { /* neither: nibabel's base affine (LAS, the grid's centre at 0), as mdanet-sdk segment reads it */
    for (i = 0; i < 3; ++i) {
      double zoom = f32(h, 80 + 4 * i) * (i == 0 ? -1.0 : 1.0);
      a[5 * i] = zoom;
      a[4 * i + 3] = -zoom * (i16(h, 42 + 2 * i) - 1) / 2.0;
    }
  }
}

static double voxel(const unsigned char* p, int16_t type, int64_t i) {
  switch (type) {
    case 2: return ((const uint8_t*)p)[i];
    case 4: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case 8: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case 16: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    case 64: { double v; memcpy(&v, p + 8 * i, 8); return v; }
    case 256: return ((const int8_t*)p)[i];
    case 512: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    default: return 0;
  }
}

static int bytes_per_voxel(int16_t type) {
  switch (type) {
    case 2: case 256: return 1;
    case 4: case 512: return 2;
    case 8: case 16: return 4;
    case 64: return 8;
    default: return 0;
  }
}

int nifti_read(const char* path, nifti_volume* volume, char* error, int error_size) {
  FILE* f = fopen(path, "rb");
  unsigned char* raw = NULL;
  int64_t n, i;
  long offset;
  int width;
  float slope, inter;
  memset(volume, 0, sizeof *volume);
  if (f == NULL) return fail(error, error_size, "cannot open it", path);
  if (fread(volume->header, 1, 352, f) != 352) {
    fclose(f);
    return fail(error, error_size, "too short for a NIfTI-1 header", path);
  }
  if (*(const int32_t*)(const void*)volume->header != 348 || memcmp(volume->header + 344, "n+1", 4) != 0) {
    fclose(f);
    return fail(error, error_size, "not a single-file little-endian NIfTI-1 (.nii) image; gunzip .nii.gz first",
                path);
  }
  if (i16(volume->header, 40) < 3 || (i16(volume->header, 40) > 3 && i16(volume->header, 48) > 1)) {
    fclose(f);
    return fail(error, error_size, "is not a 3D volume", path);
  }
  for (i = 0; i < 3; ++i) {
    volume->dim[i] = i16(volume->header, 42 + 2 * (int)i);
    if (volume->dim[i] < 1) {
      fclose(f);
      return fail(error, error_size, "has an empty axis", path);
    }
  }
  width = bytes_per_voxel(i16(volume->header, 70));
  if (width == 0) {
    fclose(f);
    return fail(error, error_size, "has a voxel type this example does not read", path);
  }
  n = volume->dim[0] * volume->dim[1] * volume->dim[2];
  offset = (long)f32(volume->header, 108);
  raw = (unsigned char*)malloc((size_t)(n * width));
  volume->data = (float*)malloc((size_t)n * sizeof(float));
  if (raw == NULL || volume->data == NULL || fseek(f, offset, SEEK_SET) != 0 ||
      fread(raw, (size_t)width, (size_t)n, f) != (size_t)n) {
    free(raw);
    fclose(f);
    nifti_free(volume);
    return fail(error, error_size, "holds fewer voxels than its header says", path);
  }
  fclose(f);
  slope = f32(volume->header, 112);
  inter = f32(volume->header, 116);
  if (!(slope != 0 && isfinite(slope))) { /* no scaling, as nibabel */
    slope = 1;
    inter = 0;
  }
  for (i = 0; i < n; ++i) volume->data[i] = (float)(voxel(raw, i16(volume->header, 70), i) * slope + inter);
  free(raw);
  header_affine(volume->header, volume->affine);
  return 0;
}

int nifti_write_mask(const char* path, const nifti_volume* like, const uint8_t* mask, char* error, int error_size) {
  unsigned char h[352];
  char tmp[4096];
  FILE* f;
  int16_t value;
  float zero = 0.0f, offset = 352.0f;
  size_t n = (size_t)(like->dim[0] * like->dim[1] * like->dim[2]);
  memcpy(h, like->header, sizeof h);
  value = 3;
  memcpy(h + 40, &value, 2); /* dim[0]: 3D */
  value = 1;
  memcpy(h + 48, &value, 2); /* dim[4] */
  value = 2;
  memcpy(h + 70, &value, 2); /* uint8 */
  value = 8;
  memcpy(h + 72, &value, 2); /* bitpix */
  memcpy(h + 108, &offset, 4);
  memcpy(h + 112, &zero, 4); /* no scaling */
  memcpy(h + 116, &zero, 4);
  memset(h + 348, 0, 4);     /* no extensions */
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return fail(error, error_size, "path too long", path);
  f = fopen(tmp, "wb");
  if (f == NULL) return fail(error, error_size, "cannot write it", path);
  if (fwrite(h, 1, sizeof h, f) != sizeof h || fwrite(mask, 1, n, f) != n || fclose(f) != 0) {
    remove(tmp);
    return fail(error, error_size, "could not be written completely", path);
  }
  if (rename(tmp, path) != 0) {
    remove(tmp);
    return fail(error, error_size, "cannot be replaced", path);
  }
  return 0;
}

void nifti_free(nifti_volume* volume) {
  free(volume->data);
  volume->data = NULL;
}
