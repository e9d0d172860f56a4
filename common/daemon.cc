#include "common/daemon.h"

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "common/flags.h"
#include "common/log.h"

ABSL_FLAG(std::string, log_format, "text",
          "how log lines are written to stderr: text, or json (one JSON object per line: time, "
          "level, component, message)");

namespace sluice {
namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void InitDaemon(int argc, char** argv, absl::string_view component, absl::string_view usage) {
  sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  umask(077);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
#if !defined(__SANITIZE_ADDRESS__)
  // The audit path moves megabyte buffers (1 MiB event chunks, batches, recording blocks) many
  // times a second. With glibc's defaults each could come fresh from the kernel (mmap, or a heap
  // trimmed back after the last one) and be faulted in page by page: 9 % of the control plane's
  // ingest time. Freed memory is kept for reuse instead (up to 64 MiB at the top of a heap).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  // Debian's Abseil is built with mutex deadlock detection on, which keeps a lock graph on every
  // acquisition (measurable on the data path). Release binaries turn it off; the sanitizer build
  // that runs the same tests keeps it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  absl::SetProgramUsageMessage(usage);
  ParseFlags(argc, argv);
  SetLogComponent(component);
  LogFormat format = LogFormat::kText;
  if (!ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format)) {
    std::fprintf(stderr, "--log-format: '%s' is not text or json\n",
                 absl::GetFlag(FLAGS_log_format).c_str());
    std::exit(2);
  }
  SetLogFormat(format);
}

int WaitForShutdownSignal(const std::function<bool()>& keep_waiting) {
  sigset_t set = ShutdownSignals();
  struct timespec tick = {0, 200 * 1000 * 1000};
  while (true) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      LogInfo("signal ", sig, ": shutting down");
      return sig;
    }
    if (keep_waiting && !keep_waiting()) return 0;
  }
}

int ExitCode(const absl::Status& status) {
  if (status.ok()) return 0;
  LogError(status.message());
  return 1;
}

}  // namespace sluice
