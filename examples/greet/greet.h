#ifndef GREET_H
#define GREET_H
/* Print "<greeting>, <name>!" on stdout. */
void greet(const char *greeting, const char *name);
#endif
