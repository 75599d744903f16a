// Sampler: llama.cpp's common sampler chain (temperature, top-k/p, min-p, penalties, grammar, logit bias).
#include <pybind11/stl.h>

#include "common.h"
#include "core.hpp"
#include "sampling.h"

namespace llama_serve {

namespace {

// A sampler chain. Its state (RNG, penalties, grammar position) changes on every call: one call at a time
// (`mutex`, taken after the model's and the context's locks). It reads the model's vocabulary, so each call
// holds the model open.
struct SamplerState {
    common_sampler * sampler = nullptr;
    std::shared_ptr<ModelState> model;
    std::mutex mutex;
    ~SamplerState() {
        if (sampler != nullptr) {
            common_sampler_free(sampler);
        }
    }
};

std::shared_ptr<SamplerState> create(const std::shared_ptr<ModelState> & model, float temperature, int32_t top_k,
                                     float top_p, float min_p, float typical_p, float repeat_penalty,
                                     int32_t repeat_last_n, float frequency_penalty, float presence_penalty,
                                     uint32_t seed, const std::string & grammar,
                                     const std::map<llama_token, float> & logit_bias, bool ignore_eos) {
    ModelReader reader(*model);
    const llama_vocab * vocab = reader.vocab;
    common_params_sampling params;
    params.temp = temperature;
    params.top_k = top_k;
    params.top_p = top_p;
    params.min_p = min_p;
    params.typ_p = typical_p;
    params.penalty_repeat = repeat_penalty;
    params.penalty_last_n = repeat_last_n;
    params.penalty_freq = frequency_penalty;
    params.penalty_present = presence_penalty;
    params.seed = seed;
    params.ignore_eos = ignore_eos;
    params.no_perf = true;
    if (!grammar.empty()) {
        params.grammar = common_grammar(COMMON_GRAMMAR_TYPE_USER, grammar);
    }
    for (const auto & [token, bias] : logit_bias) {
        check_tokens(vocab, &token, 1);
        params.logit_bias.push_back({token, bias});
    }
    auto state = std::make_shared<SamplerState>();
    std::string errors;
    clear_last_log_errors();
    try {
        state->sampler = common_sampler_init(model->model.load(), params);
    } catch (const std::exception & e) {
        errors = valid_utf8(e.what());
    }
    if (state->sampler == nullptr) {
        std::string logged = take_last_log_errors();
        throw py::value_error("invalid sampler settings" + (errors.empty() ? "" : ": " + errors) +
                              (logged.empty() ? "" : "\n" + logged));
    }
    state->model = model;
    return state;
}

}  // namespace

void register_sampler(py::module_ & m) {
    py::class_<SamplerState, std::shared_ptr<SamplerState>>(m, "Sampler")
        .def(py::init(&create), py::arg("model"), py::arg("temperature") = 0.8f, py::arg("top_k") = 40,
             py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f, py::arg("typical_p") = 1.0f,
             py::arg("repeat_penalty") = 1.0f, py::arg("repeat_last_n") = 64, py::arg("frequency_penalty") = 0.0f,
             py::arg("presence_penalty") = 0.0f, py::arg("seed") = LLAMA_DEFAULT_SEED, py::arg("grammar") = "",
             py::arg("logit_bias") = std::map<llama_token, float>{}, py::arg("ignore_eos") = false)
        .def("sample", [](SamplerState & s, ContextState & c, int32_t idx) {
            if (c.model != s.model) {
                throw py::value_error("sampler and context belong to different models");
            }
            ContextUser u(c);
            std::lock_guard lock(s.mutex);
            if (llama_get_logits_ith(u.ctx, idx) == nullptr) {
                take_last_log_errors();
                throw LlamaError("no logits at index " + std::to_string(idx) + ": decode first");
            }
            return common_sampler_sample(s.sampler, u.ctx, idx);
        }, py::arg("context"), py::arg("idx") = -1, "Sample a token from the context's logits at idx.")
        .def("accept", [](SamplerState & s, llama_token token) {
            ModelReader r(*s.model);
            check_tokens(r.vocab, &token, 1);
            std::lock_guard lock(s.mutex);
            common_sampler_accept(s.sampler, token, true);
        }, py::arg("token"), "Record a generated token (penalties, grammar state).")
        .def("reset", [](SamplerState & s) {
            ModelReader r(*s.model);
            std::lock_guard lock(s.mutex);
            common_sampler_reset(s.sampler);
        })
        .def("__repr__", [](SamplerState & s) {
            std::string chain;
            {
                ModelReader r(*s.model);
                std::lock_guard lock(s.mutex);
                chain = common_sampler_print(s.sampler);
            }
            return "<Sampler " + chain + ">";
        });
}

}  // namespace llama_serve
