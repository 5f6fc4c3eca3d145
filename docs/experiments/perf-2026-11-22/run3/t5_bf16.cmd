/work/main/build/oboro bench t5 --config xxl --tokens 77 --layers 4 --type bf16 --repeats 3 --json
