build-bench/oboro bench vae --height 416 --width 736 --repeats 2 --compare-torch --json
