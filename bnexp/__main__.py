from bnexp.cli import main

main()
