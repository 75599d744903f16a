// _core: thin bindings of llama.cpp (llama.h and its common library). One file per concept.
#include "core.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "llama.cpp primitives: models, contexts, samplers, backends";
    using namespace llama_serve;
    py::register_exception<LlamaError>(m, "LlamaError", PyExc_RuntimeError);
    py::register_exception<ClosedError>(m, "ClosedError", PyExc_ValueError);
    py::register_exception<ContextOverflowError>(m, "ContextOverflowError", PyExc_ValueError);
    register_backend(m);
    register_model(m);
    register_context(m);
    register_sampler(m);
}
