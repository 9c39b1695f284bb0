#!/bin/sh
# memcg-reclaim: /opt/orch/bin/memcg_reclaim (guest/memcg_reclaim.c) with swap
# (with-swap.sh sets up zram when the guest has none).
#
# usage: memcg-reclaim.sh ZRAM_SIZE [memcg_reclaim options...]
zram_size=$1
shift
exec "${0%/*}/with-swap.sh" "$zram_size" memcg_reclaim "$@"
