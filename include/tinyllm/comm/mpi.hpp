#pragma once
// The communicator over MPI: every process of MPI_COMM_WORLD is a rank holding a slice of the
// model. Needs <mpi.h> and the MPI library (CMake: TINYLLM_MPI, target tinyllm::mpi); not
// included by tinyllm.hpp. Start the processes with mpirun (`mpirun -np 2 tinyllm-run ...`).
//
// A failed MPI call throws tinyllm::Error naming the operation. A rank that dies takes the job
// down: mpirun ends every other process and reports which one died, so the others never wait on
// it forever.
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <tinyllm/comm/communicator.hpp>
#include <tinyllm/core/error.hpp>

namespace tinyllm {

class MpiCommunicator final : public Communicator {
 public:
  // Initialises MPI unless the program already did (then the program finalises it too).
  MpiCommunicator() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      // SERIALIZED: one thread at a time calls MPI, not always the one that started it (a
      // server's engine thread); the ThreadPool's threads never do.
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
      owns_mpi_ = true;
      if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        throw Error("this MPI cannot be called from more than one thread", "MPI_Init_thread", "MPI_THREAD_SERIALIZED");
      }
    }
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    int r = 0, n = 0;
    MPI_Comm_rank(comm_, &r);
    MPI_Comm_size(comm_, &n);
    rank_ = std::size_t(r);
    size_ = std::size_t(n);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  ~MpiCommunicator() override {
    MPI_Comm_free(&comm_);
    if (owns_mpi_) MPI_Finalize();
  }

  std::size_t rank() const override { return rank_; }
  std::size_t size() const override { return size_; }

  void all_reduce_sum(std::span<float> data) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data.data(), count(data.size()), MPI_FLOAT, MPI_SUM, comm_), "MPI_Allreduce");
  }
  void all_gather(std::span<const float> mine, std::span<float> all, std::span<const std::size_t> counts) override {
    if (counts.size() != size_ || counts[rank_] != mine.size())
      throw Error("all_gather: counts do not match the ranks", "MpiCommunicator");
    counts_.resize(size_);
    offsets_.resize(size_);
    std::size_t total = 0;
    for (std::size_t r = 0; r < size_; ++r) {
      counts_[r] = count(counts[r]);
      offsets_[r] = count(total);
      total += counts[r];
    }
    if (all.size() != total) throw Error("all_gather: output size does not match the counts", "MpiCommunicator");
    check(MPI_Allgatherv(mine.data(), counts_[rank_], MPI_FLOAT, all.data(), counts_.data(), offsets_.data(), MPI_FLOAT,
                         comm_), "MPI_Allgatherv");
  }
  void broadcast(std::span<std::byte> data, std::size_t root) override {
    check(MPI_Bcast(data.data(), count(data.size()), MPI_BYTE, int(root), comm_), "MPI_Bcast");
  }

 private:
  static int count(std::size_t n) {
    if (n > std::size_t(INT_MAX)) throw Error("a message of " + std::to_string(n) + " elements", "MPI", "at most INT_MAX");
    return int(n);
  }
  static void check(int rc, const char* op) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw Error(std::string(op) + " failed: " + std::string(text, std::size_t(len)), "MPI");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  std::size_t rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
  std::vector<int> counts_, offsets_;
};

}  // namespace tinyllm
