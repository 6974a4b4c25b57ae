/* version.c - the build and runtime report of `fmtrain --version` and of the
 * top of every run's log (see version.h). The git revision and the build
 * flags come from $(BUILD)/gen/fm_buildinfo.h, which the Makefile rewrites
 * whenever either changes. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_* */
#include "fm/version.h"

#include <dnnl.h>
#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/sbuf.h"
#include "fm_buildinfo.h" /* FM_GIT_REV, FM_BUILD_FLAGS */

#if defined(__clang__)
#define FM_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define FM_COMPILER "gcc " __VERSION__
#else
#define FM_COMPILER "unknown compiler"
#endif

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_all: return "all";
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    }
    return "unknown";
}

static const char *runtime_name(unsigned rt)
{
    switch (rt) {
    case DNNL_RUNTIME_SEQ: return "sequential";
    case DNNL_RUNTIME_OMP: return "OpenMP";
    case DNNL_RUNTIME_TBB: return "TBB";
    case DNNL_RUNTIME_THREADPOOL: return "threadpool";
    }
    return "other";
}

static const char *bind_name(omp_proc_bind_t b)
{
    switch (b) {
    case omp_proc_bind_false: return "false";
    case omp_proc_bind_true: return "true";
    case omp_proc_bind_master: return "master";
    case omp_proc_bind_close: return "close";
    case omp_proc_bind_spread: return "spread";
    }
    return "unknown";
}

/* The CPUs this process may run on, as ranges ("0-3,8"), and their count. */
static void put_affinity(fm_sbuf *t)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        fm_sbuf_printf(t, "unknown");
        return;
    }
    fm_sbuf_printf(t, "%d CPU%s (", CPU_COUNT(&set), CPU_COUNT(&set) == 1 ? "" : "s");
    int first = 1;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        int end = c;
        while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, &set))
            end++;
        fm_sbuf_printf(t, end > c ? "%s%d-%d" : "%s%d", first ? "" : ",", c, end);
        first = 0;
        c = end;
    }
    fm_sbuf_printf(t, ")");
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

void fm_version_text(char *buf, size_t n, int ranks)
{
    if (n == 0)
        return;
    fm_sbuf t = { buf, n, 0 };
    buf[0] = '\0';
    fm_sbuf_printf(&t, "fmtrain %s (git %s)\n", FM_VERSION, FM_GIT_REV);
    fm_sbuf_printf(&t, "  compiler: %s, %s\n", FM_COMPILER, FM_BUILD_FLAGS);

    const dnnl_version_t *v = dnnl_version();
    fm_sbuf_printf(&t, "  oneDNN:   %d.%d.%d", v->major, v->minor, v->patch);
    if (v->hash && *v->hash && strcmp(v->hash, "N/A") != 0) /* Debian's build records no commit */
        fm_sbuf_printf(&t, " (commit %.12s)", v->hash);
    fm_sbuf_printf(&t, ", %s runtime, ISA %s", runtime_name(v->cpu_runtime), isa_name(dnnl_get_effective_cpu_isa()));
    if (getenv("DNNL_MAX_CPU_ISA"))
        fm_sbuf_printf(&t, " (DNNL_MAX_CPU_ISA=%s)", getenv("DNNL_MAX_CPU_ISA"));
    fm_sbuf_printf(&t, "\n");

    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "unknown";
    int len = 0, major = 0, minor = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, ",\n")] = '\0'; /* Open MPI's string goes on with its repository and date */
    MPI_Get_version(&major, &minor);
    fm_sbuf_printf(&t, "  MPI:      %s (MPI %d.%d)", lib, major, minor);
    if (ranks > 0)
        fm_sbuf_printf(&t, ", %d rank%s", ranks, ranks == 1 ? "" : "s");
    fm_sbuf_printf(&t, "\n");

    fm_sbuf_printf(&t, "  OpenMP:   %s%d thread%s, OMP_PROC_BIND=%s (bind %s), OMP_PLACES=%s (%d places); CPUs: ",
        ranks > 1 ? "rank 0: " : "", omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s", env_or("OMP_PROC_BIND", "unset"),
        bind_name(omp_get_proc_bind()), env_or("OMP_PLACES", "unset"), omp_get_num_places());
    put_affinity(&t);
}
