oboro bench vae --height 416 --width 736 --type bf16 --repeats 1 --compare-torch --json --profile   # main af49ff8; load 0.95 at the start, 1.37 at the end; 17:18 UTC
