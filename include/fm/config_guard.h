/* config_guard.h - resuming a run directory with another configuration.
 *
 * A run directory records the resolved configuration it is trained with
 * (RUN/config.yaml, written at every start). When fmtrain starts on a
 * directory that already holds training state (checkpoints in RUN/ckpt/ or
 * RUN/latents.safetensors) and a config.yaml, the new configuration is
 * compared with the recorded one key by key:
 * - a key that fixes what existing state means must not change: vae.* once
 *   a VAE checkpoint or the latents exist (vae.steps and vae.ckpt_every only
 *   once the latents exist: they were encoded by the VAE of those steps),
 *   flow.*, unet.* and dit.* once a flow checkpoint exists, the classifier's
 *   keys once its checkpoint exists, run.seed and data.train_limit once
 *   anything exists. A change is FM_ERR_USAGE naming every such key with its
 *   recorded and new values and where the new value came from;
 *   config.yaml stays as it was;
 * - the others may change: how long and how often (flow.steps, ckpt_every,
 *   log_every, sample_every), which stages, sampling and evaluation output,
 *   threads, precision, bucket size, the data folder, and every key whose
 *   state does not exist yet. Each change is logged, and the recorded
 *   config.yaml is kept as RUN/config.yaml.N (the first free N >= 1, a hard
 *   link: config.yaml itself stays until the caller renames the new one over
 *   it, so no crash leaves the run without a record);
 * - the optimisation keys of a trained stage this run does not run (vae.*
 *   without the vae stage, flow.* but flow.path without flow, the
 *   classifier's without eval) are not used: they keep their recorded values
 *   in the record, so a later run that trains that stage is compared with
 *   what trained its checkpoints.
 * Without config.yaml (lost), the configuration stored in the newest readable
 * checkpoint (flow, classifier, then vae) is the record. A directory without
 * state, or whose checkpoints hold no configuration, passes. */
#ifndef FM_CONFIG_GUARD_H
#define FM_CONFIG_GUARD_H

#include "fm/config.h"
#include "fm/status.h"

/* Compare now with RUN/config.yaml of now->run.out as above (rank 0 only);
 * rec receives the configuration to record in RUN/config.yaml (now, with the
 * recorded values of the keys this run does not use). */
int fm_config_guard(const fm_config *now, fm_config *rec, fm_err *e);

#endif
