/work/main/build/oboro bench t5 --config xxl --tokens 77 --layers 4 --type q8_0 --repeats 3 --compare-torch --twin-dtypes float32,bfloat16 --json --profile
