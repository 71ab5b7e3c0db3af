/*
 * Preloaded (LD_PRELOAD) into the test processes of sanitizer builds only,
 * by tests/run.sh: dlclose() becomes a no-op, so Vulkan drivers and layers
 * stay mapped until the process exits and LeakSanitizer can still see the
 * heap blocks their globals point to. Without it every process that
 * destroys a VkInstance reports a 128-byte "leak" inside libstdc++, from
 * whichever driver or layer the loader just unloaded.
 */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
