#include "agent/audit/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/disk_space.h"

namespace sluice::agent {
namespace {

// The ranges the SIGBUS handler answers for. Fixed storage and atomics only: the handler may
// run on any thread, at any instruction.
struct GuardedRange {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> faulted{false};
  std::atomic<bool> in_use{false};
};
constexpr int kMaxGuarded = 16;
GuardedRange g_ranges[kMaxGuarded];
uintptr_t g_page_bytes = 4096;
struct sigaction g_previous;

void PassOn(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(sig);
    return;
  }
  // The default action: the faulting instruction runs again and faults with no handler left
  // (a sent SIGBUS is raised again, delivered once this handler returns).
  signal(sig, SIG_DFL);
  raise(sig);
}

void OnSigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(info->si_addr);
  for (GuardedRange& r : g_ranges) {
    const uintptr_t begin = r.begin.load(std::memory_order_acquire);
    if (begin == 0 || at < begin || at >= r.end.load(std::memory_order_acquire)) continue;
    void* page = reinterpret_cast<void*>(at & ~(g_page_bytes - 1));
    if (mmap(page, g_page_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == MAP_FAILED) {
      break;
    }
    r.faulted.store(true, std::memory_order_release);
    return;
  }
  PassOn(sig, info, context);
}

void InstallHandler() {
  g_page_bytes = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_sigaction = OnSigbus;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, &g_previous);
}

int Guard(char* data, size_t size) {
  static std::once_flag installed;
  std::call_once(installed, InstallHandler);
  for (int i = 0; i < kMaxGuarded; ++i) {
    bool expected = false;
    if (!g_ranges[i].in_use.compare_exchange_strong(expected, true)) continue;
    g_ranges[i].faulted.store(false);
    g_ranges[i].end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    g_ranges[i].begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    return i;
  }
  return -1;
}

void Unguard(int slot) {
  g_ranges[slot].begin.store(0, std::memory_order_release);
  g_ranges[slot].end.store(0, std::memory_order_release);
  g_ranges[slot].in_use.store(false, std::memory_order_release);
}

// Allocated whole (posix_fallocate) and sized exactly (a file longer from an earlier run is cut).
absl::Status Allocate(int fd, const std::string& path, size_t bytes) {
  if (absl::Status st = Preallocate(fd, path, bytes); !st.ok()) return st;
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    return absl::InternalError(absl::StrCat("cannot size ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path,
                                                             size_t bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  // Allocated whole before it is mapped: a page the file system could not allocate when it is
  // first written (a sparse file on a full disk) would fault on the data path.
  if (absl::Status st = Allocate(fd, path, bytes); !st.ok()) {
    ::close(fd);
    return st;
  }
  void* data = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    absl::Status st =
        absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(errno)));
    ::close(fd);
    return st;
  }
  const int slot = Guard(static_cast<char*>(data), bytes);
  if (slot < 0) {
    ::munmap(data, bytes);
    ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("cannot map ", path, ": more than ",
                                                     kMaxGuarded, " mapped audit files are open"));
  }
  return std::unique_ptr<MappedFile>(
      new MappedFile(fd, static_cast<char*>(data), bytes, path, slot));
}

MappedFile::~MappedFile() {
  Unguard(guard_slot_);
  ::munmap(data_, size_);
  ::close(fd_);
}

bool MappedFile::faulted() const {
  return g_ranges[guard_slot_].faulted.load(std::memory_order_acquire);
}

std::string MappedFile::FaultMessage() const {
  return absl::StrCat("I/O error on the memory-mapped pages of ", path_,
                      " (the kernel could not read or keep them: SIGBUS, caught)");
}

absl::Status MappedFile::Repair() {
  std::string copy(data_, size_);  // faulted pages read as zeros (already replaced, or now)
  if (absl::Status st = Allocate(fd_, path_, size_); !st.ok()) return st;
  if (::mmap(data_, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_, 0) == MAP_FAILED) {
    return absl::InternalError(
        absl::StrCat("cannot map ", path_, " again: ", std::strerror(errno)));
  }
  g_ranges[guard_slot_].faulted.store(false, std::memory_order_release);
  std::memcpy(data_, copy.data(), size_);
  if (faulted())
    return absl::DataLossError(absl::StrCat(FaultMessage(), ", again after it was mapped anew"));
  return absl::OkStatus();
}

}  // namespace sluice::agent
