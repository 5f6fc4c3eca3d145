build-bench/oboro bench t5 --config xxl --tokens 77 --layers 2 --repeats 3 --compare-torch --json --profile
