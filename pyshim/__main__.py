from pyshim.cli import console_main

console_main()
