/* signals.c - the preemption flag. */
#include "fm/signals.h"

#include <signal.h>
#include <string.h>

#include "fm/status.h"

static volatile sig_atomic_t g_stop_signal; /* see signals.h: the one exception to "no globals" */

static void on_signal(int sig) { g_stop_signal = sig; }

int fm_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return FM_ERR_INTERNAL;
    return FM_OK;
}

int fm_stop_requested(void) { return g_stop_signal; }

void fm_stop_clear(void) { g_stop_signal = 0; }
