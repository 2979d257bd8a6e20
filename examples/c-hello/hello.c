/* c-hello: any language that compiles to WASI runs on Bosun. This one is C, built with
 * clang-14 --target=wasm32-wasi against wasi-libc. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *pod = getenv("POD_NAME");
    printf("Hello from C on WebAssembly, pod %s\n", pod ? pod : "(unknown)");
    for (int i = 1; i < argc; i++) {
        printf("argument %d: %s\n", i, argv[i]);
    }
    return 0;
}
