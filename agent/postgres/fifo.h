// A first-in first-out queue whose nodes are reused. The relay queues a few entries per statement
// (expected answers, pending results, statements awaiting completion) and pops them again;
// std::deque allocated and freed a node for most of them. Here a popped entry is reset at once
// (what it held goes) and its node is kept for the next push, up to kSpareNodes of them. As with
// std::deque, references to queued entries stay valid while others are pushed and popped (a
// coroutine may hold front() across a suspension in which the other direction pushes).
#pragma once

#include <cstddef>
#include <list>
#include <new>
#include <utility>

namespace sluice::agent::postgres {

template <typename T>
class Fifo {
 public:
  static constexpr size_t kSpareNodes = 16;

  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  T& front() { return items_.front(); }
  const T& front() const { return items_.front(); }
  T& back() { return items_.back(); }
  const T& back() const { return items_.back(); }

  // A new entry at the back, as T() constructs it, for the caller to fill in.
  T& emplace_back() {
    if (spare_.empty()) return items_.emplace_back();
    items_.splice(items_.end(), spare_, spare_.begin());
    return items_.back();
  }
  void push_back(T value) { emplace_back() = std::move(value); }
  void pop_front() {
    if (spare_.size() >= kSpareNodes) {
      items_.pop_front();
      return;
    }
    // Reset in place (destroyed and constructed again: assigning T() to some types, such as one
    // holding an empty absl::InlinedVector, trips GCC 12's -Wuninitialized).
    T& popped = items_.front();
    popped.~T();
    ::new (static_cast<void*>(&popped)) T();
    spare_.splice(spare_.begin(), items_, items_.begin());
  }

 private:
  std::list<T> items_;
  std::list<T> spare_;  // reset entries, their nodes kept for reuse
};

}  // namespace sluice::agent::postgres
