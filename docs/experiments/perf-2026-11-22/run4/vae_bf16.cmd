/tmp/ci/build/oboro bench vae --height 416 --width 736 --type bf16 --repeats 1 --compare-torch --json --profile
