// Faults the agent injects into itself on purpose, for tests only (flags named --test-...): they
// put a crash at an exact point of the data path that no outside kill can hit reliably.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sluice::agent::test_faults {

// Kills the process (SIGKILL, as `kill -9` would) right after the answers of `n` statements in
// all have been written to their clients; 0 (the default) never does.
void KillAfterAnswers(uint64_t n);
// The data path wrote the answers of `n` statements to a client (one relaxed load when unarmed).
void AnswersWritten(size_t n);

}  // namespace sluice::agent::test_faults
