/*
 * fork_tls_reset.c - LD_PRELOAD shim for Debian's Kamailio 5.6.3 with OpenSSL 3.
 *
 * OpenSSL 3 keeps per-thread state (error queue, per-thread DRBGs, init handlers) behind
 * pthread keys. Kamailio's tls module initialises OpenSSL in the main process and makes
 * OpenSSL allocate in shared memory; every forked worker then inherits the same key
 * values, so all TLS workers use one error queue and one DRBG in shared memory and
 * corrupt them when they handshake at the same time (double frees in ser_free, SIGSEGV
 * in tls_accept). Kamailio >= 5.7.5 / 5.8 fixes this with `tls_threads_mode`, which 5.6.3
 * lacks; this shim does the equivalent: in each forked child it forgets the inherited
 * thread-specific values so that OpenSSL lazily builds private ones for that process.
 *
 * Build: cc -shared -fPIC -O2 -o fork_tls_reset.so fork_tls_reset.c
 */
#include <pthread.h>

/* glibc hands out keys from 0 upwards; OpenSSL creates fewer than ten. */
#define KEYS_TO_CLEAR 64

static void forget_inherited_thread_state(void)
{
	for (pthread_key_t k = 0; k < KEYS_TO_CLEAR; k++) {
		if (pthread_getspecific(k) != NULL)
			pthread_setspecific(k, NULL);
	}
}

__attribute__((constructor)) static void register_fork_handler(void)
{
	pthread_atfork(NULL, NULL, forget_inherited_thread_state);
}
