/* ckpt.h - training checkpoints: RUN/ckpt/<stage>-<step>.safetensors.
 *
 * A checkpoint is a safetensors file (see safetensors.h: atomic write, one
 * CRC32C per tensor) holding
 *   - groups of tensors laid out like a parameter table: for each parameter
 *     of `table`, a tensor named prefix + parameter name with the parameter's
 *     shape and data base + parameter offset. The trainer saves the weights
 *     (prefix "", base = params.data), the EMA ("ema."), and the AdamW
 *     moments ("adam.m.", "adam.v."); a loader may ask for any subset
 *     (`fmtrain sample` loads "" and "ema." only);
 *   - a few extra named fp32 tensors (e.g. "latent_scale");
 *   - string metadata: the caller's pairs (config, seed, world_size, data
 *     position, optimiser step, model kind, ...) plus, added here,
 *     "format" = "fmtrain-ckpt-1", "stage", "step" and, per group,
 *     "group:<prefix>" = the number of tensors in the group (so a loader
 *     with a smaller model than the file's also notices the mismatch).
 *
 * The step in the name is zero-padded to 8 digits so names sort. Only rank 0
 * writes. Loading verifies the whole file (sizes, CRC32C of every tensor,
 * names, shapes, finiteness) before anything is copied into the caller's
 * buffers, and falls back to the previous checkpoint if the newest is bad.
 * The metadata is covered by the file's metadata checksum (safetensors.h;
 * a checkpoint of an older fmtrain without one is read with a warning), and
 * every value a loader uses is range-checked (step >= 0 here; the trainer's
 * adam_step in [0, step]). */
#ifndef FM_CKPT_H
#define FM_CKPT_H

#include <stdint.h>

#include "fm/params.h"
#include "fm/safetensors.h"
#include "fm/status.h"

#define FM_CKPT_FORMAT "fmtrain-ckpt-1"

/* Returned by fm_ckpt_load_latest when the run has no checkpoint file of the
 * stage at all: the caller starts the stage fresh. Not an exit code. */
#define FM_CKPT_NONE 10

/* A group of tensors with the layout of a parameter table. On save base is
 * only read; on load base is written (only after the file is verified), or,
 * when NULL, the group is only verified (fm_ckpt_copy_group copies it later). */
typedef struct fm_ckpt_group {
    const char *prefix;        /* "", "ema.", "adam.m.", "adam.v." */
    const fm_params *table;    /* names, shapes and offsets */
    float *base;               /* [table->numel]: tensor i at base + items[i].offset */
} fm_ckpt_group;

/* An extra fp32 tensor. On save data is read; on load the tensor must exist
 * with this exact shape and is copied to data (data may be NULL: only check
 * that it exists, read it with fm_ckpt_tensor). */
typedef struct fm_ckpt_extra {
    const char *name;
    float *data;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
} fm_ckpt_extra;

/* A loaded checkpoint: its path, stage, step and the verified file (kept in
 * memory for metadata and extra tensors; fm_ckpt_close releases it). */
typedef struct fm_ckpt {
    char path[4096];
    char stage[64];
    int64_t step;
    fm_st_file file;
} fm_ckpt;

/* Write a checkpoint to exactly `path` (atomic, via fm_st_write). Refuses
 * a tensor with a NaN or Inf value (FM_ERR_INTERNAL naming the tensor; the
 * file is not written), duplicate tensor names, and metadata keys this
 * module owns ("format", "stage", "step", "group:*", "crc32c.*").
 * I/O failures -> FM_ERR_IO naming the path; no file appears under `path`. */
int fm_ckpt_write(const char *path, const char *stage, int64_t step, const fm_ckpt_group *groups, int ngroups,
                  const fm_ckpt_extra *extra, int nextra, const fm_st_meta *meta, int nmeta, fm_err *e);

/* Save RUN/ckpt/<stage>-<step %08>.safetensors (creating RUN/ckpt if needed)
 * with fm_ckpt_write, then delete older checkpoints of the same stage so that
 * the one just written plus the keep_last - 1 newest others remain
 * (keep_last <= 0 keeps all), and stale temporary files of the stage left by
 * a crashed writer. A failed write returns FM_ERR_IO and leaves every
 * existing checkpoint untouched. If out_path is non-NULL it receives the
 * file's path (out_len bytes). */
int fm_ckpt_save(const char *run_dir, const char *stage, int64_t step, const fm_ckpt_group *groups, int ngroups,
                 const fm_ckpt_extra *extra, int nextra, const fm_st_meta *meta, int nmeta, int keep_last,
                 char *out_path, int out_len, fm_err *e);

/* Load the newest valid checkpoint of `stage` in RUN/ckpt into the groups
 * and extras. Candidates are tried newest first; one that cannot be read,
 * fails a CRC, lacks an expected tensor, has a tensor of another shape (the
 * message names the file, the tensor, the expected and the found shape) or
 * holds a non-finite value is skipped with a warning, and the previous one
 * is tried. Returns FM_OK (out filled, if non-NULL; call fm_ckpt_close),
 * FM_CKPT_NONE if there is no checkpoint file of the stage, or FM_ERR_DATA
 * if every file was rejected. Nothing is written to the caller's buffers
 * unless FM_OK is returned. */
int fm_ckpt_load_latest(const char *run_dir, const char *stage, const fm_ckpt_group *groups, int ngroups,
                        const fm_ckpt_extra *extra, int nextra, fm_ckpt *out, fm_err *e);

/* Load one checkpoint file (any stage), with the same checks; no fallback.
 * Errors -> FM_ERR_DATA naming the file. */
int fm_ckpt_load_file(const char *path, const fm_ckpt_group *groups, int ngroups, const fm_ckpt_extra *extra,
                      int nextra, fm_ckpt *out, fm_err *e);

/* Metadata string of a loaded checkpoint, or NULL. */
const char *fm_ckpt_meta(const fm_ckpt *c, const char *key);
/* Metadata parsed as an integer / a number; missing or malformed ->
 * FM_ERR_DATA naming the file and the key. */
int fm_ckpt_meta_int(const fm_ckpt *c, const char *key, int64_t *out, fm_err *e);
/* fm_ckpt_meta_int, and the value must lie in [lo, hi]; else FM_ERR_DATA
 * naming the file, the key, the value and the range. */
int fm_ckpt_meta_int_range(const fm_ckpt *c, const char *key, int64_t lo, int64_t hi, int64_t *out, fm_err *e);
int fm_ckpt_meta_double(const fm_ckpt *c, const char *key, double *out, fm_err *e);
/* Any tensor of the loaded file (verified), or NULL. */
const fm_st_tensor *fm_ckpt_tensor(const fm_ckpt *c, const char *name);
/* Copy group g of a loaded checkpoint to g->base (after checking it again:
 * e.g. a group loaded with a NULL base). FM_ERR_DATA naming the file if the
 * group is not in it. */
int fm_ckpt_copy_group(const fm_ckpt *c, const fm_ckpt_group *g, fm_err *e);
void fm_ckpt_close(fm_ckpt *c);

#endif
