oboro bench train --config small --mixed-precision bf16 --twin --json --repeats 3   # under /usr/bin/time -v; binary = main af49ff8 (build/, Release); load 1.52 1.18 1.41 at the end; 17:15 UTC
