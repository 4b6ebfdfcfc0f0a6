package tcg

//go:generate gcc -shared -fPIC -O2 -Wall -Werror -fvisibility=hidden -Wl,--build-id=none -Wl,--hash-style=gnu -Iinclude -o pagecast-dirty.so dirty.c
