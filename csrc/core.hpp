// Shared pieces of the _core extension: handles with deterministic lifetimes, errors, logging.
#pragma once

#include <pybind11/pybind11.h>

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
    llama_model * model = nullptr;
    std::string path;
    std::shared_mutex mutex;
    std::vector<std::weak_ptr<ContextState>> contexts;

    const llama_vocab * vocab() const;
    void close();
    ~ModelState() { close(); }
};

// A context on a model. One call at a time (`mutex`); independent contexts run in parallel.
struct ContextState {
    llama_context * ctx = nullptr;
    std::shared_ptr<ModelState> model;
    std::mutex mutex;

    void close();
    ~ContextState() { close(); }
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
