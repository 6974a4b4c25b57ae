/* latent_set.c - the encode stage's latents as a training set, shared per node (see latent_set.h). */
#include "fm/latent_set.h"

#include <string.h>

#include "fm/crc32c.h"
#include "fm/latents.h"
#include "fm/safetensors.h"

/* The latents' block: this header, then x [n, dim] (scaled), then y [n]. */
typedef struct latents_head {
    int32_t n;
    float scale;
} latents_head;

#define LAT_ALIGN 64
#define LAT_X_OFF ((size_t)LAT_ALIGN) /* sizeof(latents_head) rounded up */

static size_t lat_y_off(int n, long dim) { return LAT_X_OFF + ((size_t)n * dim * sizeof(float) + LAT_ALIGN - 1) / LAT_ALIGN * LAT_ALIGN; }

/* What node rank 0 reads (fm_shared_filler's ctx). */
typedef struct latents_reader {
    char path[4200];
    int side, ch;
    long dim;
    fm_st_file file;
    fm_latents lat;
} latents_reader;

static int latents_size(void *ctx, size_t *bytes, fm_err *e)
{
    latents_reader *r = ctx;
    FM_TRY(fm_st_read(r->path, &r->file, e));
    FM_TRY(fm_latents_check(&r->file, r->path, r->side, r->ch, &r->lat, e));
    *bytes = lat_y_off(r->lat.n, r->dim) + (size_t)r->lat.n * sizeof(int32_t);
    return FM_OK;
}

static int latents_fill(void *ctx, void *base, size_t bytes, fm_err *e)
{
    (void)bytes;
    (void)e;
    latents_reader *r = ctx;
    char *b = base;
    latents_head h = { r->lat.n, r->lat.scale };
    memcpy(b, &h, sizeof h);
    fm_latents_copy(&r->lat, (float *)(b + LAT_X_OFF), (int32_t *)(b + lat_y_off(h.n, r->dim)));
    fm_st_free(&r->file);
    return FM_OK;
}

/* The scaled latents and labels of the encode stage, read and scaled once
 * per node (node rank 0) into a block every rank of the node maps.
 * Collective; every rank returns the same status and message. */
static int load_latents(const fm_pipeline *P, fm_latent_set *d, int side, int ch, long dim, fm_err *e)
{
    latents_reader r = { 0 };
    fm_run_path(P, r.path, sizeof r.path, FM_LATENTS_FILE);
    r.side = side;
    r.ch = ch;
    r.dim = dim;
    FM_TRY(fm_node_init(&d->node, P->world, e));
    const fm_shared_filler f = { latents_size, latents_fill, &r };
    int rc = fm_shared_load(&d->node, &f, "the latents", &d->block, e);
    fm_st_free(&r.file);
    if (rc != FM_OK)
        return rc;
    const char *b = d->block.base;
    latents_head h;
    memcpy(&h, b, sizeof h);
    d->n = h.n;
    d->scale = h.scale;
    d->x = (const float *)(b + LAT_X_OFF);
    d->y = (const int32_t *)(b + lat_y_off(h.n, dim));
    return FM_OK;
}

/* Every node read the latents file on its own: every rank must hold what
 * rank 0 holds (count, scale and a checksum of the block), or the ranks would
 * train on different data. FM_ERR_DATA naming the rank otherwise.
 * Collective. */
static int agree_on_latents(const fm_pipeline *P, const fm_latent_set *d, long dim, fm_err *e)
{
    const uint32_t crc = fm_crc32c(fm_crc32c(0, d->x, (size_t)d->n * dim * sizeof(float)), d->y,
                                   (size_t)d->n * sizeof(int32_t));
    const double mine[3] = { d->n, d->scale, crc };
    int differs;
    FM_TRY(fm_world_same(P->world, mine, 3, &differs, e));
    if (differs < 0)
        return FM_OK;
    char path[4200];
    fm_run_path(P, path, sizeof path, FM_LATENTS_FILE);
    return fm_fail(e, FM_ERR_DATA, "rank %d read another %s than rank 0 (a different count, scale or content): the "
                   "ranks must see one run directory (is it on a file system shared by every node?)",
                   differs, path);
}

int fm_latent_set_load(const fm_pipeline *P, int side, int ch, fm_latent_set *d, fm_err *e)
{
    const long dim = (long)side * side * ch;
    FM_TRY(load_latents(P, d, side, ch, dim, e));
    return agree_on_latents(P, d, dim, e);
}

void fm_latent_set_free(fm_latent_set *d, int collective)
{
    fm_shared_free(&d->node, &d->block, collective);
    fm_node_free(&d->node);
    memset(d, 0, sizeof *d);
}
