/*
 * mdanet_run: logits of preprocessed slices through the C API (mdanet_run_slices).
 *
 *   mdanet_run MODEL.ts INPUT.f32 OUTPUT.f32 [--device cpu|cuda]
 *
 * INPUT.f32: B slices, raw little-endian float32 (B, C, H, W), preprocessed as the artefact's preprocess.json
 * says (C, H, W come from the artefact). OUTPUT.f32: the logits (B, K, H, W), raw float32, written under a
 * temporary name and renamed, so a failure never leaves a partial file.
 */
#include <mdanet/mdanet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
  fprintf(stderr, "usage: mdanet_run MODEL.ts INPUT.f32 OUTPUT.f32 [--device cpu|cuda]\n");
  return 2;
}

/* The whole file as floats; NULL with a message on failure. */
static float* read_floats(const char* path, long* count, char* error, size_t size) {
  FILE* f = fopen(path, "rb");
  long bytes;
  float* data;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (bytes = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    snprintf(error, size, "cannot read %s", path);
    if (f != NULL) fclose(f);
    return NULL;
  }
  if (bytes % 4 != 0 || bytes == 0) {
    snprintf(error, size, "%s is not raw float32 (size %ld is not a positive multiple of 4)", path, bytes);
    fclose(f);
    return NULL;
  }
  data = (float*)malloc((size_t)bytes);
  if (data == NULL || fread(data, 1, (size_t)bytes, f) != (size_t)bytes) {
    snprintf(error, size, "cannot read %s", path);
    free(data);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *count = bytes / 4;
  return data;
}

int main(int argc, char** argv) {
  const char* device = "cpu";
  mdanet_model* model = NULL;
  int64_t c, h, w, k, batch;
  long count = 0;
  float *input = NULL, *logits = NULL;
  char error[512] = "", tmp[4096];
  FILE* out;
  int status = 1;
  if (argc != 4 && !(argc == 6 && strcmp(argv[4], "--device") == 0)) return usage();
  if (argc == 6) device = argv[5];
  /* A program that only segments may keep freed memory for the next batch (no page faults of every batch's
     activations; MDANET_UNAVAILABLE without glibc, and nothing changes then). */
  if (strncmp(device, "cpu", 3) == 0) (void)mdanet_retain_cpu_memory();
  if (mdanet_open(argv[1], device, &model) != MDANET_OK) {
    fprintf(stderr, "error: %s\n", mdanet_last_error());
    return 1;
  }
  mdanet_model_input_shape(model, &c, &h, &w);
  mdanet_model_num_classes(model, &k);
  input = read_floats(argv[2], &count, error, sizeof error);
  if (input == NULL) goto fail;
  if (count % (c * h * w) != 0) {
    snprintf(error, sizeof error, "%s holds %ld floats, not a whole number of slices of %lldx%lldx%lld", argv[2],
             count, (long long)c, (long long)h, (long long)w);
    goto fail;
  }
  batch = count / (c * h * w);
  logits = (float*)malloc((size_t)(batch * k * h * w) * sizeof(float));
  if (logits == NULL) {
    snprintf(error, sizeof error, "out of memory");
    goto fail;
  }
  if (mdanet_run_slices(model, input, batch, count, logits, batch * k * h * w) != MDANET_OK) {
    snprintf(error, sizeof error, "%s", mdanet_last_error());
    goto fail;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", argv[3]);
  out = fopen(tmp, "wb");
  if (out == NULL || fwrite(logits, sizeof(float), (size_t)(batch * k * h * w), out) != (size_t)(batch * k * h * w) ||
      fclose(out) != 0 || rename(tmp, argv[3]) != 0) {
    remove(tmp);
    snprintf(error, sizeof error, "cannot write %s", argv[3]);
    goto fail;
  }
  fprintf(stderr, "mdanet_run: %lld slice(s) %lldx%lldx%lld -> logits [%lld, %lld, %lld, %lld]\n", (long long)batch,
          (long long)c, (long long)h, (long long)w, (long long)batch, (long long)k, (long long)h, (long long)w);
  status = 0;
  goto done;
fail:
  fprintf(stderr, "error: %s\n", error);
done:
  free(input);
  free(logits);
  mdanet_close(model);
  return status;
}
