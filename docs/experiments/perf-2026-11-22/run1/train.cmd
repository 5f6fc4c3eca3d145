build-bench/oboro bench train --config small --twin --json --repeats 3
