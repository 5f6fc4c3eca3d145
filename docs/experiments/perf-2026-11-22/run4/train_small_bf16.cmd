/tmp/ci/build/oboro bench train --config small --mixed-precision bf16 --twin --json --repeats 3 --profile
