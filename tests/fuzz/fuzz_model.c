/* fuzz_model.c - the small model of the checkpoint harnesses (fuzz_ckpt.c,
 * fuzz_ckpt_meta.c) and of the seeds make_ckpt_seeds.c writes. */
#include "fm/params.h"

int fuzz_ckpt_model(fm_params *p, fm_err *e);
int fuzz_ckpt_model(fm_params *p, fm_err *e)
{
    FM_TRY(fm_params_init(p, 8, 4096, 1, e));
    fm_param *q;
    int64_t w[4] = { 4, 2, 3, 3 }, b[1] = { 4 }, emb[2] = { 11, 4 };
    int rc = fm_params_add(p, &q, 4, w, e, "conv.weight");
    if (rc == FM_OK)
        rc = fm_params_add(p, &q, 1, b, e, "conv.bias");
    if (rc == FM_OK)
        rc = fm_params_add(p, &q, 2, emb, e, "class_emb.weight");
    if (rc != FM_OK)
        fm_params_free(p);
    return rc;
}
