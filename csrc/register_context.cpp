// Context: decode, logits, embeddings, KV-cache (memory) operations and state save/load.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>

#include "common.h"
#include "core.hpp"

namespace llama_serve {

void ContextState::close() {
    std::lock_guard lock(mutex);
    if (ctx != nullptr) {
        llama_free(ctx);
        ctx = nullptr;
    }
}

namespace {

using Context = std::shared_ptr<ContextState>;

// A llama_batch owned for the length of a call.
struct Batch {
    llama_batch batch;
    explicit Batch(size_t capacity) : batch(llama_batch_init(static_cast<int32_t>(capacity), 0, 1)) {}
    ~Batch() { llama_batch_free(batch); }
    Batch(const Batch &) = delete;
    Batch & operator=(const Batch &) = delete;

    void clear() { batch.n_tokens = 0; }
    void add(llama_token id, llama_pos pos, llama_seq_id seq_id, bool logits) {
        const int32_t i = batch.n_tokens++;
        batch.token[i] = id;
        batch.pos[i] = pos;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = seq_id;
        batch.logits[i] = logits;
    }
};

// llama_decode, or llama_encode for a context without memory (encoder-only models such as BERT).
void run(llama_context * ctx, const Batch & b, const char * what) {
    clear_last_log_errors();
    const int32_t rc = llama_get_memory(ctx) != nullptr ? llama_decode(ctx, b.batch) : llama_encode(ctx, b.batch);
    if (rc != 0) {
        std::string errors = take_last_log_errors();
        throw LlamaError(std::string(what) + " failed (code " + std::to_string(rc) + ")" +
                         (errors.empty() ? "" : ": " + errors));
    }
}

llama_pos next_pos(llama_context * ctx, llama_seq_id seq_id) {
    llama_memory_t mem = llama_get_memory(ctx);
    return mem != nullptr ? llama_memory_seq_pos_max(mem, seq_id) + 1 : 0;
}

// Sequence ids reach GGML_ASSERTs inside llama.cpp: check them here (-1 = every sequence, where allowed).
void check_seq(llama_context * ctx, llama_seq_id seq_id, bool allow_all = false) {
    const auto n = static_cast<llama_seq_id>(llama_n_seq_max(ctx));
    if ((seq_id < 0 || seq_id >= n) && !(allow_all && seq_id == -1)) {
        throw py::value_error("seq_id " + std::to_string(seq_id) + " out of range [0, " + std::to_string(n) + ")");
    }
}

llama_memory_t memory_of(llama_context * ctx) {
    llama_memory_t mem = llama_get_memory(ctx);
    if (mem == nullptr) {
        throw py::value_error("this context has no memory (KV cache): the model is encoder-only");
    }
    return mem;
}

Context create(const std::shared_ptr<ModelState> & model, uint32_t n_ctx, uint32_t n_batch, uint32_t n_ubatch,
               uint32_t n_seq_max, int32_t n_threads, bool embeddings, int pooling, bool kv_unified,
               std::optional<bool> flash_attn) {
    auto params = llama_context_default_params();
    params.n_ctx = n_ctx;
    params.n_batch = n_batch != 0 ? n_batch : std::min<uint32_t>(n_ctx == 0 ? 2048 : n_ctx, 2048);
    params.n_ubatch = n_ubatch != 0 ? n_ubatch : std::min<uint32_t>(params.n_batch, 512);
    params.n_seq_max = n_seq_max;
    if (n_threads > 0) {
        params.n_threads = n_threads;
        params.n_threads_batch = n_threads;
    }
    params.embeddings = embeddings;
    params.pooling_type = static_cast<enum llama_pooling_type>(pooling);
    params.kv_unified = kv_unified;
    if (flash_attn.has_value()) {  // unset: llama.cpp decides (auto)
        params.flash_attn_type = *flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    params.no_perf = true;
    auto state = std::make_shared<ContextState>();
    std::string errors;
    {
        py::gil_scoped_release release;
        std::unique_lock lock(model->mutex);  // registering a context changes the model's list
        if (model->model == nullptr) {
            throw ClosedError("the model is closed");
        }
        clear_last_log_errors();
        try {
            state->ctx = llama_init_from_model(model->model, params);
        } catch (const std::exception & e) {
            errors = valid_utf8(e.what());
        }
        if (errors.empty()) {
            errors = take_last_log_errors();
        }
        if (state->ctx != nullptr) {
            state->model = model;
            model->contexts.push_back(state);
        }
    }
    if (state->ctx == nullptr) {
        throw LlamaError("failed to create context" + (errors.empty() ? "" : ": " + errors));
    }
    return state;
}

// Decode ids into sequence seq_id after what it already holds; logits for the last token or all of them.
void decode(llama_context * ctx, const std::vector<llama_token> & ids, llama_seq_id seq_id, bool all_logits) {
    if (ids.empty()) {
        throw py::value_error("decode needs at least one token");
    }
    check_seq(ctx, seq_id);
    check_tokens(llama_model_get_vocab(llama_get_model(ctx)), ids.data(), ids.size());
    const llama_pos start = next_pos(ctx, seq_id);
    const uint32_t limit = llama_n_ctx_seq(ctx);
    if (start + ids.size() > limit) {
        throw ContextOverflowError("context overflow: sequence " + std::to_string(seq_id) + " holds " +
                                   std::to_string(start) + " tokens, + " + std::to_string(ids.size()) +
                                   " new > its context size " + std::to_string(limit));
    }
    const size_t n_batch = llama_n_batch(ctx);
    Batch batch(std::min(ids.size(), n_batch));
    for (size_t offset = 0; offset < ids.size(); offset += n_batch) {
        const size_t n = std::min(n_batch, ids.size() - offset);
        batch.clear();
        for (size_t i = 0; i < n; ++i) {
            const bool last = offset + i + 1 == ids.size();
            batch.add(ids[offset + i], start + static_cast<llama_pos>(offset + i), seq_id, all_logits || last);
        }
        run(ctx, batch, "llama_decode");
    }
}

// Pooled embeddings of many token sequences, packed several per decode; returns (n, n_embd_out),
// written straight into the numpy array.
py::array_t<float> embed(ContextState & s, const std::vector<std::vector<llama_token>> & seqs, bool normalize) {
    size_t width = 0;
    {
        ContextUser u(s);
        width = static_cast<size_t>(llama_model_n_embd_out(llama_get_model(u.ctx)));
    }
    py::array_t<float> out({static_cast<py::ssize_t>(seqs.size()), static_cast<py::ssize_t>(width)});
    float * result = out.mutable_data();
    ContextUser u(s);
    if (llama_pooling_type(u.ctx) == LLAMA_POOLING_TYPE_NONE) {
        throw py::value_error("this context pools no embeddings: create it with embeddings=True and a pooling type");
    }
    const llama_vocab * vocab = u.vocab();
    const size_t n_seq_max = llama_n_seq_max(u.ctx);
    const size_t limit = std::min({static_cast<size_t>(llama_n_batch(u.ctx)), static_cast<size_t>(llama_n_ubatch(u.ctx)),
                                   static_cast<size_t>(llama_n_ctx_seq(u.ctx))});
    for (size_t i = 0; i < seqs.size(); ++i) {
        if (seqs[i].empty()) {
            throw py::value_error("text " + std::to_string(i) + " has no tokens");
        }
        if (seqs[i].size() > limit) {
            throw ContextOverflowError("text " + std::to_string(i) + " has " + std::to_string(seqs[i].size()) +
                                       " tokens; this context embeds at most " + std::to_string(limit));
        }
        check_tokens(vocab, seqs[i].data(), seqs[i].size());
    }
    Batch batch(limit);
    llama_memory_t mem = llama_get_memory(u.ctx);
    auto flush = [&](size_t first, size_t count) {
        if (mem != nullptr) {
            llama_memory_clear(mem, true);
        }
        run(u.ctx, batch, "embedding decode");
        for (size_t k = 0; k < count; ++k) {
            const float * e = llama_get_embeddings_seq(u.ctx, static_cast<llama_seq_id>(k));
            if (e == nullptr) {
                throw LlamaError("the model produced no pooled embedding");
            }
            float * dst = result + (first + k) * width;
            if (normalize) {
                common_embd_normalize(e, dst, static_cast<int>(width), 2);
            } else {
                std::copy(e, e + width, dst);
            }
        }
        batch.clear();
    };
    size_t first = 0, count = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        if (count == n_seq_max || static_cast<size_t>(batch.batch.n_tokens) + seqs[i].size() > limit) {
            flush(first, count);
            first = i;
            count = 0;
        }
        for (size_t p = 0; p < seqs[i].size(); ++p) {
            batch.add(seqs[i][p], static_cast<llama_pos>(p), static_cast<llama_seq_id>(count), true);
        }
        ++count;
    }
    if (count > 0) {
        flush(first, count);
    }
    return out;
}

}  // namespace

void register_context(py::module_ & m) {
    py::class_<ContextState, std::shared_ptr<ContextState>>(m, "Context")
        .def(py::init(&create), py::arg("model"), py::arg("n_ctx") = 4096, py::arg("n_batch") = 0,
             py::arg("n_ubatch") = 0, py::arg("n_seq_max") = 1, py::arg("n_threads") = 0,
             py::arg("embeddings") = false, py::arg("pooling") = -1, py::arg("kv_unified") = false,
             py::arg("flash_attn") = py::none())
        .def("close", [](ContextState & s) {
            py::gil_scoped_release release;
            s.close();
        })
        .def_property_readonly("closed", [](ContextState & s) { return s.ctx == nullptr; })
        .def_property_readonly("n_ctx", [](ContextState & s) { return llama_n_ctx(ContextUser(s).ctx); })
        .def_property_readonly("n_batch", [](ContextState & s) { return llama_n_batch(ContextUser(s).ctx); })
        .def_property_readonly("n_seq_max", [](ContextState & s) { return llama_n_seq_max(ContextUser(s).ctx); })
        .def("eval", [](ContextState & s, const std::vector<llama_token> & ids, llama_seq_id seq_id) {
            ContextUser u(s);
            decode(u.ctx, ids, seq_id, false);
        }, py::arg("ids"), py::arg("seq_id") = 0, "Decode ids, keeping the last token's logits inside the context.")
        .def("decode", [](ContextState & s, const std::vector<llama_token> & ids, bool all, llama_seq_id seq_id) {
            size_t n_vocab = 0;
            {
                ContextUser u(s);
                // Logits of every token: only the last n_batch chunk stays in the context's buffer.
                if (all && ids.size() > llama_n_batch(u.ctx)) {
                    throw py::value_error("all=True needs len(ids) <= n_batch (" +
                                          std::to_string(llama_n_batch(u.ctx)) + "), got " +
                                          std::to_string(ids.size()));
                }
                n_vocab = static_cast<size_t>(llama_vocab_n_tokens(u.vocab()));
            }
            const size_t n_rows = all ? ids.size() : 1;
            py::array_t<float> out = all ? py::array_t<float>({static_cast<py::ssize_t>(n_rows),
                                                               static_cast<py::ssize_t>(n_vocab)})
                                         : py::array_t<float>(static_cast<py::ssize_t>(n_vocab));
            float * dst = out.mutable_data();
            ContextUser u(s);  // the context may have been closed in between: checked again
            decode(u.ctx, ids, seq_id, all);
            for (size_t r = 0; r < n_rows; ++r) {
                const float * row = llama_get_logits_ith(u.ctx, all ? static_cast<int32_t>(r) : -1);
                std::copy(row, row + n_vocab, dst + r * n_vocab);
            }
            return out;
        }, py::arg("ids"), py::arg("all") = false, py::arg("seq_id") = 0)
        .def("logits", [](ContextState & s) {
            size_t n_vocab = 0;
            {
                ContextUser u(s);
                n_vocab = static_cast<size_t>(llama_vocab_n_tokens(u.vocab()));
            }
            py::array_t<float> out(static_cast<py::ssize_t>(n_vocab));
            float * dst = out.mutable_data();
            ContextUser u(s);
            const float * row = llama_get_logits_ith(u.ctx, -1);
            if (row == nullptr) {
                throw LlamaError("no logits: decode first");
            }
            std::copy(row, row + n_vocab, dst);
            return out;
        }, "The last decoded token's logits.")
        .def("embed", &embed, py::arg("seqs"), py::arg("normalize") = true)
        .def("n_past", [](ContextState & s, llama_seq_id seq_id) {
            ContextUser u(s);
            check_seq(u.ctx, seq_id);
            return next_pos(u.ctx, seq_id);
        }, py::arg("seq_id") = 0, "How many positions sequence seq_id holds.")
        .def("clear", [](ContextState & s) {
            ContextUser u(s);
            llama_memory_clear(memory_of(u.ctx), true);
        })
        .def("remove", [](ContextState & s, llama_seq_id seq_id, llama_pos p0, llama_pos p1) {
            ContextUser u(s);
            check_seq(u.ctx, seq_id, true);
            return llama_memory_seq_rm(memory_of(u.ctx), seq_id, p0, p1);
        }, py::arg("seq_id"), py::arg("p0") = -1, py::arg("p1") = -1,
           "Remove positions [p0, p1) of seq_id (-1: all sequences / open ends); False if not possible.")
        .def("copy_seq", [](ContextState & s, llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1) {
            ContextUser u(s);
            check_seq(u.ctx, src);
            check_seq(u.ctx, dst);
            llama_memory_seq_cp(memory_of(u.ctx), src, dst, p0, p1);
        }, py::arg("src"), py::arg("dst"), py::arg("p0") = -1, py::arg("p1") = -1)
        .def("keep_seq", [](ContextState & s, llama_seq_id seq_id) {
            ContextUser u(s);
            check_seq(u.ctx, seq_id);
            llama_memory_seq_keep(memory_of(u.ctx), seq_id);
        }, py::arg("seq_id"))
        .def("save_state", [](ContextState & s) {
            std::string data;
            {
                ContextUser u(s);
                data.resize(llama_state_get_size(u.ctx));
                data.resize(llama_state_get_data(u.ctx, reinterpret_cast<uint8_t *>(data.data()), data.size()));
            }
            return py::bytes(data);
        }, "The whole context state (KV cache, logits) as bytes.")
        .def("load_state", [](ContextState & s, const py::bytes & blob) {
            std::string data = blob;
            ContextUser u(s);
            clear_last_log_errors();
            if (llama_state_set_data(u.ctx, reinterpret_cast<const uint8_t *>(data.data()), data.size()) == 0) {
                throw LlamaError("state does not fit this context: " + take_last_log_errors());
            }
        }, py::arg("state"));
}

}  // namespace llama_serve
