"""The warnings every C++ target of the project is compiled with."""

COPTS = [
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
]
