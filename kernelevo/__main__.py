from kernelevo.cli import main

main()
