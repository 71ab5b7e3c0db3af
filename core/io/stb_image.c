/*
 * The implementations of the vendored stb_image and stb_image_write (see
 * stbi.h), in a file of their own. Their asserts are off, as in a distribution's build of the
 * library (NDEBUG): on a corrupt file stb_image returns an error where an assert
 * would abort the program.
 */
#define STBI_ASSERT(x) ((void)0)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "io/stbi.h"
