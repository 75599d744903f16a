// Backends and devices: load ggml backend modules from the package, list devices, route logs.
#include <cstdio>

#include "core.hpp"
#include "ggml-backend.h"

namespace llama_serve {

namespace {
bool g_verbose = false;
thread_local std::string t_last_errors;
thread_local bool t_in_error = false;

void log_callback(ggml_log_level level, const char * text, void *) {
    if (level != GGML_LOG_LEVEL_CONT) {
        t_in_error = level == GGML_LOG_LEVEL_ERROR;
    }
    if (t_in_error && t_last_errors.size() < 4096) {
        t_last_errors += text;
    }
    if (g_verbose) {
        std::fputs(text, stderr);
    }
}

// Whether in[i..i+n) is one well-formed UTF-8 sequence (no overlong forms, surrogates, or > U+10FFFF).
bool utf8_sequence_at(const std::string & in, size_t i, size_t & n) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(in[i + k]); };
    const unsigned char c = byte(0);
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) { n = 1; return true; }
    if (c >= 0xC2 && c <= 0xDF) { n = 2; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; lo = c == 0xE0 ? 0xA0 : 0x80; hi = c == 0xED ? 0x9F : 0xBF; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; lo = c == 0xF0 ? 0x90 : 0x80; hi = c == 0xF4 ? 0x8F : 0xBF; }
    else { return false; }
    if (i + n > in.size() || byte(1) < lo || byte(1) > hi) { return false; }
    for (size_t k = 2; k < n; ++k) {
        if ((byte(k) & 0xC0) != 0x80) { return false; }
    }
    return true;
}

const char * device_type_name(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "other";
    }
}
}  // namespace

// Log lines may quote bytes of a corrupt file: exception messages stay valid UTF-8 (bad bytes become '?').
std::string valid_utf8(const std::string & in) {
    std::string out;
    out.reserve(in.size());
    for (size_t i = 0, n = 0; i < in.size(); i += n) {
        if (utf8_sequence_at(in, i, n)) {
            out.append(in, i, n);
        } else {
            out += '?';
            n = 1;
        }
    }
    return out;
}

std::string take_last_log_errors() {
    std::string out;
    out.swap(t_last_errors);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
        out.pop_back();
    }
    return valid_utf8(out);
}

void clear_last_log_errors() { t_last_errors.clear(); }

void register_backend(py::module_ & m) {
    llama_log_set(log_callback, nullptr);

    m.def("load_backends", [](const std::string & dir) {
        py::gil_scoped_release release;
        ggml_backend_load_all_from_path(dir.c_str());
        llama_backend_init();
    }, py::arg("dir"), "Load every ggml backend module found in dir (the best CPU variant among them).");

    m.def("set_verbose", [](bool verbose) { g_verbose = verbose; }, py::arg("verbose"),
          "Print llama.cpp's log to stderr (off by default; errors still reach exception messages).");

    m.def("devices", []() {
        py::list out;
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            size_t free = 0, total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            py::dict d;
            d["name"] = ggml_backend_dev_name(dev);
            d["description"] = ggml_backend_dev_description(dev);
            d["type"] = device_type_name(ggml_backend_dev_type(dev));
            d["backend"] = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
            d["memory_free"] = free;
            d["memory_total"] = total;
            out.append(d);
        }
        return out;
    }, "The ggml devices actually loaded, as dicts.");

    m.def("system_info", []() { return std::string(llama_print_system_info()); });
}

}  // namespace llama_serve
