/* LD_PRELOAD helper for the device probes: on SIGSEGV/SIGABRT print the native stack to stderr,
 * then die of the same signal.  gcc -shared -fPIC -O1 -o /tmp/segv.so bench/gpu/segv_backtrace.c */
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

static void on_fault(int sig) {
  void* frames[64];
  int n = backtrace(frames, 64);
  static const char msg[] = "\n[segv_backtrace] native stack:\n";
  write(2, msg, sizeof msg - 1);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  signal(SIGSEGV, on_fault);
  signal(SIGBUS, on_fault);
}
