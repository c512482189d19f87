# Sourced by setup.sh and env.sh: the one place the LLVM version of the kernel and module
# builds is chosen (Linux 7.3's Rust needs a clang that bindgen and rustc agree with;
# bookworm's clang-19 is it). Override with RIO_LLVM_VERSION for an experiment.
LLVM_VERSION=${RIO_LLVM_VERSION:-19}
