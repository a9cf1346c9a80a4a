/*
 * The version of the library's interface, checked when it loads (`_native.ABI`).
 *
 * The library is loaded with ctypes, which trusts the Python side's signatures:
 * a library built from older sources (an editable install whose rebuild failed,
 * a stale copy in a source tree) would be called with the wrong arguments and
 * crash. Bump ABI here and in _native.py with any change to an exported
 * function's arguments or meaning; a library that answers otherwise is not used.
 */

int kernels_abi(void) { return 5; }
