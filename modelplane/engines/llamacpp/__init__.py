"""The embedded CPU engine: llama.cpp through llama-cpp-python."""
