/*
 * stb_image compiled into fuzz_image itself (the header of Debian's libstb,
 * with STB_IMAGE_IMPLEMENTATION), so that the decoder vpeft calls carries
 * the fuzzer's coverage instrumentation and ASan's checks: linked against
 * the shared libstb, the target saw 44 edges, all of them vpeft's. Its
 * definitions take the place of libstb's. The Makefile builds this file
 * without UBSan: integer UB inside stb is the dependency's to fix, while
 * its memory errors are vpeft's concern, since vpeft feeds it untrusted
 * files. Its asserts are off, as in the shipped libstb (built with
 * NDEBUG): stb_image 2.27 asserts on a corrupt JPEG Huffman code where the
 * library returns "bad huffman code", and the fuzzer would stop there.
 */
#define STBI_ASSERT(x) ((void)0)
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
