build-bench/oboro bench vae --height 416 --width 736 --repeats 1 --profile --json
