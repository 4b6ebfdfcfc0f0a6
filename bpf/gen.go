package bpf

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -D__TARGET_ARCH_x86" -target bpfel -type page_state -type slot_info -type event -type ring_index dirty dirty.c -- -I./include
