// Model: load a GGUF file; tokenizer, vocabulary, metadata and chat templates.
#include <pybind11/stl.h>

#include <cstring>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "chat.h"
#include "core.hpp"
#include "json-schema-to-grammar.h"

namespace llama_serve {

const llama_vocab * ModelState::vocab() const {
    if (model == nullptr) {
        throw ClosedError("the model is closed");
    }
    return llama_model_get_vocab(model);
}

void ModelState::close() {
    std::unique_lock lock(mutex);
    for (auto & weak : contexts) {
        if (auto context = weak.lock()) {
            context->close();
        }
    }
    contexts.clear();
    if (model != nullptr) {
        llama_model_free(model);
        model = nullptr;
    }
}

void check_tokens(const llama_vocab * vocab, const llama_token * ids, size_t n) {
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= n_vocab) {
            throw py::value_error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                  " is out of range [0, " + std::to_string(n_vocab) + ")");
        }
    }
}

namespace {

using Model = std::shared_ptr<ModelState>;

Model load(const std::string & path, int n_gpu_layers, bool vocab_only, bool use_mmap) {
    auto params = llama_model_default_params();
    params.n_gpu_layers = n_gpu_layers;
    params.vocab_only = vocab_only;
    params.load_mode = use_mmap ? LLAMA_LOAD_MODE_AUTO : LLAMA_LOAD_MODE_NONE;
    llama_model * model = nullptr;
    std::string errors;
    {
        py::gil_scoped_release release;
        clear_last_log_errors();
        try {
            model = llama_model_load_from_file(path.c_str(), params);
        } catch (const std::exception & e) {
            model = nullptr;
            errors = valid_utf8(e.what());
        }
        if (errors.empty()) {
            errors = take_last_log_errors();
        }
    }
    if (model == nullptr) {
        throw LlamaError("failed to load model from '" + path + "'" + (errors.empty() ? "" : ": " + errors));
    }
    auto state = std::make_shared<ModelState>();
    state->model = model;
    state->path = path;
    return state;
}

std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special,
                                  bool parse_special) {
    if (text.size() > static_cast<size_t>(INT32_MAX)) {
        throw py::value_error("text too long to tokenize");
    }
    std::vector<llama_token> ids(text.size() + 2);
    int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                               static_cast<int32_t>(ids.size()), add_special, parse_special);
    if (n < 0) {
        if (n == INT32_MIN) {
            throw py::value_error("tokenization overflow");
        }
        ids.resize(-n);
        n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                           static_cast<int32_t>(ids.size()), add_special, parse_special);
    }
    ids.resize(n);
    return ids;
}

py::list to_list(const std::vector<llama_token> & ids) {
    py::list out(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
        PyList_SET_ITEM(out.ptr(), i, PyLong_FromLong(ids[i]));
    }
    return out;
}

std::string token_piece(const llama_vocab * vocab, llama_token id, bool special) {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab, id, buf, sizeof(buf), 0, special);
    if (n >= 0) {
        return std::string(buf, n);
    }
    std::string piece(-n, '\0');
    n = llama_token_to_piece(vocab, id, piece.data(), static_cast<int32_t>(piece.size()), 0, special);
    piece.resize(std::max(n, 0));
    return piece;
}

std::string detokenize(const llama_vocab * vocab, const std::vector<llama_token> & ids, bool remove_special,
                       bool unparse_special) {
    std::string text(ids.size() * 4 + 16, '\0');
    int32_t n = llama_detokenize(vocab, ids.data(), static_cast<int32_t>(ids.size()), text.data(),
                                 static_cast<int32_t>(text.size()), remove_special, unparse_special);
    if (n < 0) {
        text.resize(-n);
        n = llama_detokenize(vocab, ids.data(), static_cast<int32_t>(ids.size()), text.data(),
                             static_cast<int32_t>(text.size()), remove_special, unparse_special);
    }
    text.resize(std::max(n, 0));
    return text;
}

std::vector<std::pair<std::string, std::string>> metadata(const llama_model * model) {
    std::vector<std::pair<std::string, std::string>> out;
    std::vector<char> key(512), value(4096);
    for (int32_t i = 0; i < llama_model_meta_count(model); ++i) {
        if (llama_model_meta_key_by_index(model, i, key.data(), key.size()) < 0) {
            continue;
        }
        int32_t n = llama_model_meta_val_str_by_index(model, i, value.data(), value.size());
        if (n >= static_cast<int32_t>(value.size())) {
            value.resize(n + 1);
            n = llama_model_meta_val_str_by_index(model, i, value.data(), value.size());
        }
        if (n >= 0) {
            out.emplace_back(std::string(key.data()), std::string(value.data(), n));
        }
    }
    return out;
}

// A corrupt file may hold any bytes: keys and values are decoded with replacement, never raising.
py::dict to_dict(const std::vector<std::pair<std::string, std::string>> & items) {
    py::dict out;
    for (const auto & [key, value] : items) {
        out[py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(key.data(), key.size(), "replace"))] =
            py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(value.data(), value.size(), "replace"));
    }
    return out;
}

std::string apply_chat_template(const llama_model * model, const std::string & messages_json,
                                const std::string & tools_json, bool add_generation_prompt,
                                const std::string & template_override) {
    auto templates = common_chat_templates_init(model, template_override);
    common_chat_templates_inputs inputs;
    inputs.messages = common_chat_msgs_parse_oaicompat(common_json::parse(messages_json));
    if (!tools_json.empty()) {
        inputs.tools = common_chat_tools_parse_oaicompat(common_json::parse(tools_json));
    }
    inputs.add_generation_prompt = add_generation_prompt;
    inputs.use_jinja = true;
    return common_chat_templates_apply(templates.get(), inputs).prompt;
}

}  // namespace

void register_model(py::module_ & m) {
    py::class_<ModelState, std::shared_ptr<ModelState>>(m, "Model")
        .def(py::init(&load), py::arg("path"), py::arg("n_gpu_layers") = -1, py::arg("vocab_only") = false,
             py::arg("use_mmap") = true)
        .def("close", [](ModelState & s) {
            py::gil_scoped_release release;
            s.close();
        })
        .def_property_readonly("closed", [](ModelState & s) { return s.model == nullptr; })
        .def_property_readonly("path", [](ModelState & s) { return s.path; })
        .def("tokenize", [](ModelState & s, const std::string & text, bool add_special, bool parse_special) {
            std::vector<llama_token> ids;
            {
                ModelReader r(s);
                ids = tokenize(r.vocab, text, add_special, parse_special);
            }
            return to_list(ids);
        }, py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def("tokenize_batch", [](ModelState & s, const std::vector<std::string> & texts, bool add_special,
                                  bool parse_special, int n_threads) {
            std::vector<std::vector<llama_token>> all(texts.size());
            {
                ModelReader r(s);
                // llama.cpp's tokenizer is thread-safe: split large batches over threads.
                const size_t wanted = n_threads > 0 ? n_threads : std::max(1u, std::thread::hardware_concurrency());
                const size_t n = std::min(wanted, std::max<size_t>(1, texts.size() / 16));
                std::vector<std::exception_ptr> errors(n);
                auto work = [&](size_t t) {
                    try {
                        for (size_t i = t; i < texts.size(); i += n) {
                            all[i] = tokenize(r.vocab, texts[i], add_special, parse_special);
                        }
                    } catch (...) {
                        errors[t] = std::current_exception();
                    }
                };
                std::vector<std::thread> threads;
                std::vector<size_t> here = {0};  // shares of threads that could not be started run here
                for (size_t t = 1; t < n; ++t) {
                    try {
                        threads.emplace_back(work, t);
                    } catch (const std::system_error &) {
                        here.push_back(t);
                    }
                }
                for (size_t t : here) {
                    work(t);
                }
                for (auto & thread : threads) {
                    thread.join();
                }
                for (auto & error : errors) {
                    if (error) {
                        std::rethrow_exception(error);
                    }
                }
            }
            py::list out(all.size());
            for (size_t i = 0; i < all.size(); ++i) {
                PyList_SET_ITEM(out.ptr(), i, to_list(all[i]).release().ptr());
            }
            return out;
        }, py::arg("texts"), py::arg("add_special") = true, py::arg("parse_special") = false,
           py::arg("n_threads") = 0)
        .def("detokenize_bytes", [](ModelState & s, const std::vector<llama_token> & ids, bool remove_special,
                                    bool unparse_special) {
            std::string text;
            {
                ModelReader r(s);
                check_tokens(r.vocab, ids.data(), ids.size());
                text = detokenize(r.vocab, ids, remove_special, unparse_special);
            }
            return py::bytes(text);
        }, py::arg("ids"), py::arg("remove_special") = false, py::arg("unparse_special") = false)
        .def("token_to_piece", [](ModelState & s, llama_token id, bool special) {
            ModelReader r(s);
            check_tokens(r.vocab, &id, 1);
            return py::bytes(token_piece(r.vocab, id, special));
        }, py::arg("id"), py::arg("special") = true)
        .def("token_text", [](ModelState & s, llama_token id) {
            ModelReader r(s);
            check_tokens(r.vocab, &id, 1);
            return std::string(llama_vocab_get_text(r.vocab, id));
        }, py::arg("id"))
        .def("is_eog", [](ModelState & s, llama_token id) {
            ModelReader r(s);
            check_tokens(r.vocab, &id, 1);
            return llama_vocab_is_eog(r.vocab, id);
        }, py::arg("id"))
        .def_property_readonly("metadata", [](ModelState & s) {
            std::vector<std::pair<std::string, std::string>> items;
            {
                ModelReader r(s);
                items = metadata(r.model);
            }
            return to_dict(items);
        })
        .def_property_readonly("n_vocab", [](ModelState & s) { return llama_vocab_n_tokens(ModelReader(s).vocab); })
        .def_property_readonly("n_embd", [](ModelState & s) { return llama_model_n_embd(ModelReader(s).model); })
        .def_property_readonly("n_ctx_train", [](ModelState & s) {
            return llama_model_n_ctx_train(ModelReader(s).model);
        })
        .def_property_readonly("n_layer", [](ModelState & s) { return llama_model_n_layer(ModelReader(s).model); })
        .def_property_readonly("n_params", [](ModelState & s) { return llama_model_n_params(ModelReader(s).model); })
        .def_property_readonly("size", [](ModelState & s) { return llama_model_size(ModelReader(s).model); })
        .def_property_readonly("description", [](ModelState & s) {
            char buf[256];
            llama_model_desc(ModelReader(s).model, buf, sizeof(buf));
            return std::string(buf);
        })
        .def_property_readonly("has_encoder", [](ModelState & s) { return llama_model_has_encoder(ModelReader(s).model); })
        .def_property_readonly("bos", [](ModelState & s) { return llama_vocab_bos(ModelReader(s).vocab); })
        .def_property_readonly("eos", [](ModelState & s) { return llama_vocab_eos(ModelReader(s).vocab); })
        .def_property_readonly("eot", [](ModelState & s) { return llama_vocab_eot(ModelReader(s).vocab); })
        .def_property_readonly("nl", [](ModelState & s) { return llama_vocab_nl(ModelReader(s).vocab); })
        .def_property_readonly("add_bos", [](ModelState & s) { return llama_vocab_get_add_bos(ModelReader(s).vocab); })
        .def("apply_chat_template", [](ModelState & s, const std::string & messages_json, const std::string & tools_json,
                                       bool add_generation_prompt, const std::string & template_override) {
            ModelReader r(s);
            try {
                return apply_chat_template(r.model, messages_json, tools_json, add_generation_prompt,
                                           template_override);
            } catch (const std::exception & e) {
                throw py::value_error("chat template: " + valid_utf8(e.what()));
            }
        }, py::arg("messages_json"), py::arg("tools_json") = "", py::arg("add_generation_prompt") = true,
           py::arg("template_override") = "");

    m.def("json_schema_to_grammar", [](const std::string & schema_json) {
        try {
            return json_schema_to_grammar(common_json::parse(schema_json));
        } catch (const std::exception & e) {
            throw py::value_error("invalid JSON schema: " + valid_utf8(e.what()));
        }
    }, py::arg("schema_json"), "GBNF grammar for a JSON schema (llama.cpp's own converter).");
}

}  // namespace llama_serve
