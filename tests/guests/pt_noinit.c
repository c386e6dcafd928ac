/* A page fault before LGUEST_INIT: there is no lguest_data yet, so 2.6.23's
 * Host writes cr2 at its offset from Guest-physical 0 (8), and with no IDT
 * entry the trap kills the Guest as unhandled. */
#include "pt_lib.h"

int main(void)
{
	return (int)probe_read(0x00800000UL);
}
