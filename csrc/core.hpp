// Shared pieces of the _core extension: handles with deterministic lifetimes, errors, logging.
//
// The threading contract: every method may be called from any thread at any time, also while another
// thread closes the object; it works or raises ClosedError / LlamaError / ValueError. The lock order:
//   1. never wait for a native lock while holding the GIL (ModelReader and ContextUser release it first);
//   2. never re-acquire the GIL while holding a native lock: copy results out, unlock, then convert;
//   3. native locks nest model (shared; close() exclusive) -> context -> sampler, never the other way;
//   4. arguments are checked before any state changes.
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "llama.h"

namespace py = pybind11;

namespace llama_serve {

// Raised for every llama.cpp failure that is not a plain bad argument (ValueError) or bad index.
struct LlamaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Use of a Model or Context after close().
struct ClosedError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// A decode that would not fit in the context window.
struct ContextOverflowError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ContextState;

// A loaded model. Readers (tokenize, new contexts) hold `mutex` shared; close() holds it exclusively,
// so a model is never freed under a running call.
struct ModelState {
    std::atomic<llama_model *> model{nullptr};  // atomic: `closed` is read without the lock
    std::string path;
    std::shared_mutex mutex;
    std::vector<std::weak_ptr<ContextState>> contexts;

    const llama_vocab * vocab() const;
    void close();
    ~ModelState() { close(); }
};

// A context on a model. One call at a time (`mutex`); independent contexts run in parallel.
struct ContextState {
    std::atomic<llama_context *> ctx{nullptr};
    std::shared_ptr<ModelState> model;
    std::mutex mutex;

    void close();
    ~ContextState() { close(); }
};

// Read access to an open model for the length of a call; the GIL is released while it is held.
struct ModelReader {
    py::gil_scoped_release nogil;
    std::shared_lock<std::shared_mutex> lock;
    const llama_model * model;
    const llama_vocab * vocab;
    explicit ModelReader(ModelState & state) : lock(state.mutex), model(state.model), vocab(state.vocab()) {}
};

// Exclusive access to an open context (and read access to its model) for the length of a call; the GIL
// is released while it is held.
struct ContextUser {
    py::gil_scoped_release nogil;
    std::shared_lock<std::shared_mutex> model_lock;
    std::lock_guard<std::mutex> lock;
    llama_context * ctx;
    explicit ContextUser(ContextState & s) : model_lock(s.model->mutex), lock(s.mutex), ctx(s.ctx) {
        if (ctx == nullptr) {
            throw ClosedError(s.model->model == nullptr ? "the context is closed (its model was closed)"
                                                        : "the context is closed");
        }
    }
    const llama_vocab * vocab() const { return llama_model_get_vocab(llama_get_model(ctx)); }
};

// `in` with every byte that is not part of well-formed UTF-8 replaced by '?' (exception messages must decode).
std::string valid_utf8(const std::string & in);

// The last error lines llama.cpp logged on this thread (valid UTF-8), to put in exception messages.
std::string take_last_log_errors();
void clear_last_log_errors();

// Raise ValueError unless every id is a valid token of `vocab`.
void check_tokens(const llama_vocab * vocab, const llama_token * ids, size_t n);

void register_backend(py::module_ & m);
void register_model(py::module_ & m);
void register_context(py::module_ & m);
void register_sampler(py::module_ & m);

}  // namespace llama_serve
