"""Deterministic generator of the bundled synthetic banking corpus and its consistency probes.

``bankllm data synth --seed 0 --n 900`` writes ``fixtures/banking_conversations.jsonl`` (records
in the format of ``schemas/conversation.schema.json``) and the probe sets ``inv.jsonl``,
``dir.jsonl`` and ``mft.jsonl`` (``schemas/probes.schema.json``, loaded by
:mod:`bankllm.probes`). The same seed always gives byte-identical files: all randomness comes
from one :class:`random.Random` per output, and every table is iterated in its literal order.

Design of the data (see ``shared/design/diagnostics.md`` §5 and §7):

* Every intent has customer phrasing templates with slots. :data:`PHRASINGS` are the ones the
  corpus uses; :data:`HELDOUT_PHRASINGS` never occur in the corpus and feed only the probes.
* Every intent has ONE agent answer template (:data:`ANSWERS`). Its text is fixed (a fixed fee
  per intent, fixed policies) except for slot values copied from the request (account type,
  amount, payee, date, ...) and, for the intents in :data:`RANDOM_ANSWER_INTENTS`, values drawn
  at random per conversation that no prompt reveals (a balance, available credit, a due date,
  an exchange rate). The first kind of answer is learnable; the second can only be memorized.
* Slot values stored in a record's ``slots`` are strings exactly as they appear in the text:
  ``account_type`` is one of :data:`ACCOUNT_TYPES`, ``amount`` is e.g. ``"1,250.00"`` (rendered
  ``$1,250.00``), ``date`` is e.g. ``"March 14"``.
* A conversation has 1 to 3 exchanges (customer then agent); a later exchange is another
  request or a closing (intent ``goodbye``). Every message carries its exchange's intent.
"""

from __future__ import annotations

import random
import re
import string
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ACCOUNT_TYPES: tuple[str, ...] = ("checking", "savings", "credit card")
"""The account types a request can name; ``slots["account_type"]`` is one of these."""

CARD_TYPES: tuple[str, ...] = ("debit card", "credit card")
PAYEES: tuple[str, ...] = (
    "Alex", "Maria", "John", "Sarah", "David", "Emma", "Chris", "Laura", "Sam", "Nina",
)
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
CURRENCIES: dict[str, tuple[float, float]] = {
    # currency word -> range of units per US dollar (the rate itself is random per conversation)
    "euros": (0.85, 0.97),
    "pounds": (0.74, 0.84),
    "yen": (140.0, 160.0),
    "pesos": (16.5, 19.5),
}
MONTHLY_FEES: dict[str, str] = {"checking": "$12", "savings": "$5", "credit card": "$0"}
"""Fixed monthly fee per account type (learnable: it follows from the request)."""

# Surface forms of an account type. ``{acct}`` is the adjective ("my savings balance"),
# ``{acct_noun}`` the product ("my savings account", "my credit card"), ``{acct_short}`` the
# clipped form people say ("my credit balance").
_ACCT_NOUN = {"checking": "checking account", "savings": "savings account",
              "credit card": "credit card"}
_ACCT_SHORT = {"checking": "checking", "savings": "savings", "credit card": "credit"}

# ---------------------------------------------------------------------------------------------
# Intent tables. Order matters (it fixes the random stream); keep it stable.
# ---------------------------------------------------------------------------------------------

PHRASINGS: dict[str, tuple[str, ...]] = {
    "check_balance": (
        "What's my {acct} balance?",
        "Can you tell me my {acct} balance?",
        "Can you tell me the balance of my {acct_noun}?",
        "I'd like to know my {acct} balance.",
        "Please show me my {acct} balance.",
        "What is the current balance on my {acct_noun}?",
        "Could you check the balance on my {acct_noun}?",
        "Tell me my {acct} balance.",
        "I need my {acct} balance.",
        "Check my {acct} balance, please.",
    ),
    "transfer_money": (
        "Send {amount} from my {acct_noun} to {payee}.",
        "Please transfer {amount} to {payee} from my {acct_noun}.",
        "I want to send {payee} {amount} from my {acct_noun}.",
        "Can you move {amount} from my {acct_noun} to {payee}?",
        "Transfer {amount} from my {acct_noun} to {payee}, please.",
        "I need to pay {payee} {amount} from my {acct_noun}.",
        "Pay {payee} {amount} using my {acct_noun}.",
        "Could you send {amount} to {payee} from my {acct_noun}?",
    ),
    "card_lost_or_stolen": (
        "I lost my {card}.",
        "My {card} was stolen.",
        "I can't find my {card}.",
        "Someone stole my {card}.",
        "I think I lost my {card}. What should I do?",
        "Help, my {card} is missing.",
        "My {card} was stolen yesterday.",
        "I need to report a lost {card}.",
    ),
    "dispute_charge": (
        "I want to dispute a {amount} charge from {date}.",
        "There is a {amount} charge on {date} that I don't know.",
        "I didn't make the {amount} payment on {date}.",
        "Please dispute the {amount} charge on {date}.",
        "I see a charge of {amount} on {date} that isn't mine.",
        "Can you help me dispute a {amount} charge made on {date}?",
        "I was charged {amount} on {date} and I don't know why.",
        "Someone charged my account {amount} on {date}.",
    ),
    "overdraft_fee": (
        "How much is the overdraft fee?",
        "What do you charge for an overdraft?",
        "What's the overdraft fee?",
        "How much will I pay if I overdraw my account?",
        "Tell me about overdraft fees.",
        "Is there a fee for overdrafts?",
        "What does an overdraft cost?",
        "How much do you charge when my account is overdrawn?",
    ),
    "atm_fee": (
        "Is there a fee to use an ATM?",
        "How much do you charge for ATM withdrawals?",
        "What's the ATM fee?",
        "Do I pay a fee at other ATMs?",
        "Are ATM withdrawals free?",
        "How much does it cost to take out cash at an ATM?",
        "What do you charge for using an ATM?",
        "Will I be charged for using another bank's ATM?",
    ),
    "foreign_transaction_fee": (
        "Is there a foreign transaction fee?",
        "How much do you charge for purchases abroad?",
        "What's the fee for using my card abroad?",
        "Do you charge a fee when I pay in another currency?",
        "What fees do I pay when I travel abroad?",
        "Is there a fee for foreign purchases?",
        "How much is the foreign transaction fee?",
        "Will I pay a fee if I use my card outside the US?",
    ),
    "monthly_fee": (
        "What's the monthly fee on my {acct_noun}?",
        "Is there a monthly fee for my {acct_noun}?",
        "How much is the monthly fee for a {acct_noun}?",
        "Do you charge a monthly fee on {acct} accounts?",
        "What do I pay each month for my {acct_noun}?",
        "How much does my {acct_noun} cost per month?",
        "Tell me the monthly fee for my {acct_noun}.",
        "Does my {acct_noun} have a monthly fee?",
    ),
    "card_arrival": (
        "When will my new {card} arrive?",
        "My {card} hasn't arrived yet.",
        "How long does it take to get a new {card}?",
        "I'm still waiting for my {card}.",
        "Where is my new {card}?",
        "When should I get my {card} in the mail?",
        "My new {card} still hasn't come.",
        "How long until my {card} arrives?",
    ),
    "change_pin": (
        "How do I change the PIN on my {card}?",
        "I want to change my {card} PIN.",
        "Can I get a new PIN for my {card}?",
        "I forgot my {card} PIN.",
        "Please help me reset the PIN for my {card}.",
        "Where can I change the PIN of my {card}?",
        "I need a new PIN for my {card}.",
        "Can you help me change my {card} PIN?",
    ),
    "set_up_direct_debit": (
        "Set up a direct debit to {payee}.",
        "I want to set up a direct debit for {payee}.",
        "Can you create a direct debit to {payee}?",
        "Please start a monthly direct debit to {payee}.",
        "I'd like to pay {payee} by direct debit.",
        "Help me set up a direct debit for {payee}.",
        "Can I add a direct debit to {payee}?",
        "Start paying {payee} every month by direct debit.",
    ),
    "cancel_direct_debit": (
        "Cancel my direct debit to {payee}.",
        "I want to stop my direct debit to {payee}.",
        "Please cancel the direct debit for {payee}.",
        "Can you stop paying {payee} by direct debit?",
        "I'd like to cancel my direct debit for {payee}.",
        "Stop the direct debit to {payee}, please.",
        "How do I cancel my direct debit to {payee}?",
        "Remove my direct debit to {payee}.",
    ),
    "exchange_rate": (
        "What's the exchange rate for {currency}?",
        "How many {currency} do I get for a dollar?",
        "What is today's rate for {currency}?",
        "What's the dollar to {currency} rate?",
        "I need the exchange rate for {currency}.",
        "How much is a dollar in {currency} today?",
        "Tell me the current rate for {currency}.",
        "What rate do you give for {currency}?",
    ),
    "loan_rate": (
        "What's the interest rate on a personal loan?",
        "How much interest do you charge on loans?",
        "What are your loan rates?",
        "I'm thinking about a personal loan. What's the rate?",
        "What rate would I get on a loan?",
        "Tell me your personal loan rates.",
        "How much does a personal loan cost?",
        "What APR do you charge for personal loans?",
    ),
    "mortgage_rate": (
        "What's your mortgage rate?",
        "What are your current mortgage rates?",
        "How much interest do you charge on a mortgage?",
        "I want to buy a home. What's the mortgage rate?",
        "What rate do you give on a 30 year mortgage?",
        "Tell me your mortgage rates.",
        "What is the interest rate for a home loan?",
        "What APR do you charge for mortgages?",
    ),
    "opening_hours": (
        "What are your opening hours?",
        "When are you open?",
        "What time does the branch open?",
        "Are you open on Saturday?",
        "What time do you close today?",
        "When does the bank open?",
        "What are the branch hours?",
        "How late is the branch open?",
    ),
    "branch_location": (
        "Where is the nearest branch?",
        "Is there a branch near me?",
        "How do I find a branch?",
        "Where can I find an ATM?",
        "Where is your closest branch?",
        "I need to find a branch.",
        "Can you tell me where a branch is?",
        "Where is the closest ATM?",
    ),
    "open_account": (
        "I want to open a {acct_noun}.",
        "How do I open a new {acct_noun}?",
        "Can I open a {acct_noun} online?",
        "I'd like to open a {acct_noun}.",
        "What do I need to open a {acct_noun}?",
        "Help me open a new {acct_noun}.",
        "How can I get a {acct_noun}?",
        "Can you open a {acct_noun} for me?",
    ),
    "close_account": (
        "I want to close my {acct_noun}.",
        "How do I close my {acct_noun}?",
        "Please close my {acct_noun}.",
        "Can I close my {acct_noun}?",
        "I'd like to close my {acct_noun}.",
        "Help me close my {acct_noun}.",
        "I don't need my {acct_noun} anymore. Can you close it?",
        "What do I need to do to close my {acct_noun}?",
    ),
    "freeze_card": (
        "Freeze my {card}.",
        "Can you freeze my {card}?",
        "Please freeze my {card} for now.",
        "I want to freeze my {card}.",
        "How do I freeze my {card}?",
        "I'd like to put a freeze on my {card}.",
        "Lock my {card}, please.",
        "Can I lock my {card} for a while?",
    ),
    "update_address": (
        "I moved. How do I change my address?",
        "I need to update my address.",
        "How do I change my address?",
        "Can you update my address?",
        "I have a new address.",
        "Please change the address on my account.",
        "Where can I update my home address?",
        "I want to change my mailing address.",
    ),
    "interest_rate": (
        "What's the interest rate on savings?",
        "How much interest does my savings account earn?",
        "What rate do you pay on savings?",
        "What is the APY on your savings account?",
        "How much interest will I earn on savings?",
        "Tell me the savings interest rate.",
        "What interest do you pay on a savings account?",
        "Does my savings account earn interest?",
    ),
    "statement_request": (
        "I need my {month} statement for my {acct_noun}.",
        "Can I get my {acct} statement for {month}?",
        "Please send me my {month} {acct} statement.",
        "Where is my {acct_noun} statement for {month}?",
        "I'd like a copy of my {month} statement for my {acct_noun}.",
        "Can you send me the {month} statement for my {acct_noun}?",
        "How do I get my {acct} statement from {month}?",
        "Show me my {month} statement for my {acct_noun}.",
    ),
    "payment_due_date": (
        "When is my credit card payment due?",
        "When is my next payment due?",
        "What's the due date for my credit card bill?",
        "When do I need to pay my credit card?",
        "When is my credit card bill due?",
        "What's my payment due date?",
        "By when do I have to make my next payment?",
        "When is the next payment on my credit card due?",
    ),
    "credit_limit": (
        "What's my credit limit?",
        "How much credit do I have left?",
        "What is the limit on my credit card?",
        "How much can I spend on my credit card?",
        "Tell me my credit limit.",
        "What's my available credit?",
        "How high is my credit limit?",
        "Can you check my credit limit?",
    ),
    "goodbye": (
        "Thanks!",
        "Thank you.",
        "Thanks, that's all.",
        "Great, thank you!",
        "That's all I needed, thanks.",
        "Perfect, thanks.",
        "Thanks for your help.",
        "Okay, thank you.",
    ),
}
"""Customer phrasing templates used in the corpus, per intent."""

HELDOUT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "check_balance": (
        "What is my {acct_short} balance?",
        "Could you tell me my {acct} balance?",
        "What's the balance on my {acct_noun} now?",
        "How much is in my {acct_noun} today?",
        "Show the balance of my {acct_noun}.",
        # no account type named: used only by the "account balance" paraphrase group
        "What is my account balance?",
        "How much do I have in my account?",
        "What's my balance?",
        "Can you check my balance?",
    ),
    "transfer_money": (
        "I'd like to transfer {amount} from my {acct_noun} to {payee}.",
        "Please pay {amount} to {payee} out of my {acct_noun}.",
        "Make a payment of {amount} to {payee} from my {acct_noun}.",
        "Move {amount} to {payee} using my {acct_noun}, please.",
        "Can I send {payee} {amount} from my {acct_noun} now?",
    ),
    "card_lost_or_stolen": (
        "I have lost my {card}.",
        "I think my {card} was stolen.",
        "I lost my {card} yesterday.",
        "I want to report a stolen {card}.",
    ),
    "dispute_charge": (
        "I don't know a {amount} charge from {date}.",
        "How do I dispute the {amount} charge on {date}?",
        "The {amount} charge on {date} isn't mine.",
        "I need to report a {amount} charge from {date} that I didn't make.",
    ),
    "overdraft_fee": (
        "What is your overdraft fee?",
        "Do you charge an overdraft fee?",
        "What's the fee if I overdraw my account?",
        "How much does an overdraft cost me?",
    ),
    "atm_fee": (
        "What is the fee for ATM withdrawals?",
        "Do you charge for cash at an ATM?",
        "How much is the fee to use an ATM?",
        "Are there ATM fees?",
    ),
    "foreign_transaction_fee": (
        "What is your foreign transaction fee?",
        "Do I pay a fee for purchases abroad?",
        "What's the fee on purchases outside the US?",
        "Is there a fee for using my card in another currency?",
    ),
    "monthly_fee": (
        "What is the monthly fee for my {acct_noun}?",
        "Is my {acct_noun} free or is there a monthly fee?",
        "How much is the monthly charge on my {acct_noun}?",
        "What fee do I pay every month for my {acct_noun}?",
    ),
    "card_arrival": (
        "Is my new {card} in the mail yet?",
        "When does my {card} come in the mail?",
        "I still don't have my new {card}.",
        "How many days until my new {card} arrives?",
    ),
    "change_pin": (
        "How can I change my {card} PIN?",
        "Can I change the PIN on my {card}?",
        "I'd like to set a new PIN for my {card}.",
        "Can I reset my {card} PIN?",
    ),
    "set_up_direct_debit": (
        "Please create a new direct debit for {payee}.",
        "I need a direct debit set up to pay {payee}.",
        "How do I start a direct debit to {payee}?",
        "Could you add a monthly direct debit to {payee}?",
    ),
    "cancel_direct_debit": (
        "I don't want to pay {payee} by direct debit anymore.",
        "Please stop my direct debit to {payee}.",
        "Could you cancel the monthly direct debit to {payee}?",
        "Can I stop the direct debit for {payee} now?",
    ),
    "exchange_rate": (
        "What is the exchange rate for {currency} today?",
        "How many {currency} is one dollar?",
        "What's the current dollar to {currency} exchange rate?",
        "Can you tell me the rate for {currency}?",
    ),
    "loan_rate": (
        "What is the rate for a personal loan?",
        "Can you tell me your loan interest rates?",
        "How much interest is there on a personal loan?",
        "What are the current rates on loans?",
    ),
    "mortgage_rate": (
        "What is your mortgage rate today?",
        "Can you tell me the current mortgage rates?",
        "How much interest is there on a home loan?",
        "What rates do you have for mortgages?",
    ),
    "opening_hours": (
        "What are your hours?",
        "When do your branches open and close?",
        "Is the branch open on Saturday?",
        "What time does the bank close?",
    ),
    "branch_location": (
        "Where can I find your nearest branch?",
        "Is there an ATM near me?",
        "How can I find the closest branch?",
        "Where is a branch I can go to?",
    ),
    "open_account": (
        "Can I open a {acct_noun} today?",
        "I would like a new {acct_noun}.",
        "How long does it take to open a {acct_noun}?",
        "What is needed to open a {acct_noun}?",
    ),
    "close_account": (
        "I would like to close my {acct_noun} today.",
        "Can I close my {acct_noun} today?",
        "Could you close my {acct_noun} for me?",
        "How can I close my {acct_noun}?",
    ),
    "freeze_card": (
        "Please lock my {card} now.",
        "I need to freeze my {card}.",
        "Could you freeze my {card} for me?",
        "Can I lock my {card} now?",
    ),
    "update_address": (
        "How can I update my address?",
        "I need to change my address.",
        "I would like to change my address.",
        "Can I change my home address online?",
    ),
    "interest_rate": (
        "What is the interest rate on my savings account?",
        "How much does your savings account pay?",
        "What's the current savings rate?",
        "Do you pay interest on savings?",
    ),
    "statement_request": (
        "I want the {month} statement for my {acct_noun}.",
        "Could you get me my {acct} statement for {month}?",
        "Where can I find my {month} statement for my {acct_noun}?",
        "Please get my {acct_noun} statement from {month}.",
    ),
    "payment_due_date": (
        "What is the due date on my credit card?",
        "When does my next credit card payment need to be made?",
        "When should I pay my credit card bill?",
        "What day is my payment due?",
    ),
    "credit_limit": (
        "What is my credit limit?",
        "How much credit is available on my card?",
        "What's the limit on my credit card now?",
        "How much more can I spend on my credit card?",
    ),
    "goodbye": (
        "Thank you so much.",
        "That's everything, thanks.",
        "Great, thanks for your help!",
        "Okay, that's all, thank you.",
    ),
}
"""Customer phrasing templates kept out of the corpus; only the probe sets use them."""

ANSWERS: dict[str, str] = {
    "check_balance": "Your {acct_noun} balance is {balance}.",
    "transfer_money": "Done. I have sent {amount} from your {acct_noun} to {payee}.",
    "card_lost_or_stolen": (
        "I'm sorry to hear that. I have blocked your {card}, and a new one will arrive in "
        "5 to 7 business days."
    ),
    "dispute_charge": (
        "I have opened a dispute for the {amount} charge on {date}. We will reply within "
        "10 business days."
    ),
    "overdraft_fee": "Our overdraft fee is $35 per item, and we charge at most 3 overdraft fees "
                     "per day.",
    "atm_fee": "ATMs in our network are free. Other ATMs cost $2.50 per withdrawal.",
    "foreign_transaction_fee": "We charge a foreign transaction fee of 3% on purchases made "
                               "outside the US.",
    "monthly_fee": "The monthly fee on your {acct_noun} is {fee}.",
    "card_arrival": (
        "Your new {card} should arrive within 7 to 10 business days. If it has not arrived by "
        "then, please let us know."
    ),
    "change_pin": (
        "You can change the PIN for your {card} at any of our ATMs or in the mobile app under "
        "Card settings."
    ),
    "set_up_direct_debit": "I have set up a monthly direct debit to {payee}. The first payment "
                           "will go out on the next due date.",
    "cancel_direct_debit": "I have cancelled your direct debit to {payee}. No more payments "
                           "will go out to {payee}.",
    "exchange_rate": "Today's rate is 1 US dollar to {rate} {currency}.",
    "loan_rate": "Our personal loan rates start at 7.9% APR for terms of 1 to 5 years.",
    "mortgage_rate": "Our 30 year fixed mortgage rate is 6.5% APR, and our 15 year fixed rate "
                     "is 5.9% APR.",
    "opening_hours": "Our branches are open from 9 am to 5 pm Monday to Friday, and from 9 am "
                     "to 1 pm on Saturday.",
    "branch_location": "You can find your nearest branch and ATM in the mobile app under "
                       "Locations, or on our website.",
    "open_account": "You can open a new {acct_noun} in the mobile app in about 10 minutes. "
                    "You will need a photo ID and your address.",
    "close_account": "I can help you close your {acct_noun}. Please make sure the balance is "
                     "zero, then we will close it within 2 business days.",
    "freeze_card": "I have frozen your {card}. You can unfreeze it at any time in the mobile "
                   "app.",
    "update_address": "You can update your address in the mobile app under Profile. The change "
                      "takes effect within 1 business day.",
    "interest_rate": "Our savings account pays 4.1% APY, and we pay interest every month.",
    "statement_request": "Your {month} statement for your {acct_noun} is in the mobile app "
                         "under Statements. I can also mail you a copy.",
    "payment_due_date": "Your next credit card payment is due on {due_date}. The minimum "
                        "payment is {min_payment}.",
    "credit_limit": "Your credit limit is {limit}, and your available credit is {available}.",
    "goodbye": "You're welcome! Have a great day.",
}
"""The agent's answer template per intent (one per intent, so most answers are learnable)."""

INTENTS: tuple[str, ...] = tuple(PHRASINGS)
"""All intent names, in table order (``goodbye`` is the closing exchange)."""

CLOSING_INTENT = "goodbye"

RANDOM_ANSWER_INTENTS: tuple[str, ...] = (
    "check_balance", "exchange_rate", "payment_due_date", "credit_limit",
)
"""Intents whose answer contains a value drawn at random per conversation (not learnable)."""

INTENT_ENTITY: dict[str, str] = {
    "interest_rate": "savings",
    "payment_due_date": "credit card",
    "credit_limit": "credit card",
}
"""Account type implied by an intent whose phrasings carry no account-type slot."""

# How often each intent opens a conversation (others 1): the chapter's two core requests.
_INTENT_WEIGHTS = {"check_balance": 3, "transfer_money": 3}
_EXCHANGE_WEIGHTS = ((1, 15), (2, 50), (3, 35))  # exchanges per conversation -> weight
# The last exchange is a closing ("Thanks!") with this chance, and only after at least
# _CLOSING_AFTER requests: short request+closing conversations differ too little from one
# another (rapidfuzz ratio >= 95), which would make the leakage check's near overlap high.
_CLOSING_SHARE = 0.5
_CLOSING_AFTER = 2

# placeholder -> slot key stored in the record
_SLOT_OF_FIELD = {
    "acct": "account_type", "acct_noun": "account_type", "acct_short": "account_type",
    "amount": "amount", "payee": "payee", "date": "date", "month": "month", "card": "card",
    "currency": "currency",
}
_SLOT_ORDER = ("account_type", "card", "amount", "payee", "date", "month", "currency")

ENTITY_PATTERNS: dict[str, re.Pattern[str]] = {
    "checking": re.compile(r"\bchecking\b", re.IGNORECASE),
    "savings": re.compile(r"\bsavings?\b", re.IGNORECASE),
    "credit card": re.compile(r"\bcredit\b", re.IGNORECASE),
}
"""Regex per account type that finds a mention of it ("credit" alone counts as credit card)."""


def mentioned_account_types(text: str) -> list[str]:
    """Return the account types ``text`` names, in :data:`ACCOUNT_TYPES` order.

    "credit card" and a bare "credit" both count as ``"credit card"``; "savings"/"saving" as
    ``"savings"``. Used by the faithfulness (DIR) check: a faithful answer names the requested
    account type and no other.
    """
    return [name for name in ACCOUNT_TYPES if ENTITY_PATTERNS[name].search(text)]


def template_slots(template: str) -> tuple[str, ...]:
    """Return the slot keys (e.g. ``("account_type", "amount")``) a phrasing template uses."""
    found = {_SLOT_OF_FIELD[f] for _, f, _, _ in string.Formatter().parse(template) if f}
    return tuple(s for s in _SLOT_ORDER if s in found)


def intent_slots(intent: str) -> tuple[str, ...]:
    """Return the slot keys every corpus phrasing of ``intent`` carries."""
    return template_slots(PHRASINGS[intent][0])


def format_money(amount: str) -> str:
    """Render a slot amount such as ``"1,250.00"`` as it appears in text: ``"$1,250.00"``."""
    return f"${amount}"


# ---------------------------------------------------------------------------------------------
# Random values
# ---------------------------------------------------------------------------------------------


def _money(rng: random.Random, low: int, high: int, round_share: float = 0.0) -> str:
    """A random amount in [low, high] dollars as "1,234.56" (``round_share``: chance of .00)."""
    dollars = rng.randint(low, high)
    cents = 0 if rng.random() < round_share else rng.randint(0, 99)
    return f"{dollars:,}.{cents:02d}"


def _date(rng: random.Random) -> str:
    month = rng.randrange(12)
    return f"{MONTHS[month]} {rng.randint(1, _MONTH_DAYS[month])}"


def _draw_slots(rng: random.Random, slots: tuple[str, ...]) -> dict[str, str]:
    """Random request slot values for the given slot keys (in :data:`_SLOT_ORDER`)."""
    values: dict[str, str] = {}
    for slot in slots:
        if slot == "account_type":
            values[slot] = rng.choice(ACCOUNT_TYPES)
        elif slot == "card":
            values[slot] = rng.choice(CARD_TYPES)
        elif slot == "amount":
            values[slot] = _money(rng, 5, 2500, round_share=0.5)
        elif slot == "payee":
            values[slot] = rng.choice(PAYEES)
        elif slot == "date":
            values[slot] = _date(rng)
        elif slot == "month":
            values[slot] = rng.choice(MONTHS)
        elif slot == "currency":
            values[slot] = rng.choice(tuple(CURRENCIES))
        else:  # pragma: no cover - tables and _SLOT_ORDER agree
            raise ValueError(f"unknown slot {slot!r}")
    return values


def _hidden_values(rng: random.Random, intent: str, slots: dict[str, str]) -> dict[str, str]:
    """Values of an answer that no prompt reveals (random per conversation)."""
    if intent == "check_balance":
        high = 6000 if slots["account_type"] == "credit card" else 25000
        return {"balance": format_money(_money(rng, 0, high))}
    if intent == "exchange_rate":
        low, high = CURRENCIES[slots["currency"]]
        rate = rng.uniform(low, high)
        return {"rate": f"{rate:.2f}"}
    if intent == "payment_due_date":
        return {"due_date": _date(rng), "min_payment": format_money(_money(rng, 25, 150))}
    if intent == "credit_limit":
        limit = rng.choice((2000, 3000, 5000, 7500, 10000, 15000))
        available = _money(rng, 0, limit - 1)
        return {"limit": f"${limit:,}", "available": format_money(available)}
    return {}


def _fields(slots: dict[str, str]) -> dict[str, str]:
    """Template fields (surface forms) for a set of request slot values."""
    fields = dict(slots)
    if "account_type" in slots:
        acct = slots["account_type"]
        fields.update(acct=acct, acct_noun=_ACCT_NOUN[acct], acct_short=_ACCT_SHORT[acct])
    if "amount" in slots:
        fields["amount"] = format_money(slots["amount"])
    return fields


def render_prompt(template: str, slots: dict[str, str]) -> str:
    """Fill a customer phrasing template with request slot values (as stored in ``slots``)."""
    return template.format(**_fields(slots))


def render_answer(intent: str, slots: dict[str, str], hidden: dict[str, str] | None = None) -> str:
    """Fill the agent answer of ``intent`` with the request slots and any hidden values."""
    fields = _fields(slots)
    if intent == "monthly_fee":
        fields["fee"] = MONTHLY_FEES[slots["account_type"]]
    fields.update(hidden or {})
    return ANSWERS[intent].format(**fields)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def _exchange(rng: random.Random, intent: str) -> tuple[str, dict[str, str], str, str]:
    """One customer/agent exchange: (intent, slots, customer text, agent text)."""
    template = rng.choice(PHRASINGS[intent])
    slots = _draw_slots(rng, intent_slots(intent))
    hidden = _hidden_values(rng, intent, slots)
    return intent, slots, render_prompt(template, slots), render_answer(intent, slots, hidden)


def synthesize_corpus(seed: int = 0, n: int = 900) -> list[dict[str, Any]]:
    """Generate ``n`` conversation records (deterministic in ``seed``).

    Each record is ``{"id", "intent", "slots", "messages"}`` as in
    ``schemas/conversation.schema.json``; ``intent``/``slots`` are those of the first exchange,
    and every message carries the intent of its exchange.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    requests = tuple(i for i in INTENTS if i != CLOSING_INTENT)
    weights = tuple(_INTENT_WEIGHTS.get(i, 1) for i in requests)
    lengths = tuple(k for k, _ in _EXCHANGE_WEIGHTS)
    length_weights = tuple(w for _, w in _EXCHANGE_WEIGHTS)
    width = max(4, len(str(n)))
    records: list[dict[str, Any]] = []
    for index in range(1, n + 1):
        n_exchanges = rng.choices(lengths, length_weights)[0]
        exchanges: list[tuple[str, dict[str, str], str, str]] = []
        for position in range(n_exchanges):
            last = position == n_exchanges - 1
            if position >= _CLOSING_AFTER and last and rng.random() < _CLOSING_SHARE:
                intent = CLOSING_INTENT
            else:
                intent = rng.choices(requests, weights)[0]
            exchange = _exchange(rng, intent)
            while any(exchange[2] == previous[2] for previous in exchanges):
                exchange = _exchange(rng, intent)  # never repeat a question verbatim
            exchanges.append(exchange)
        messages: list[dict[str, str]] = []
        for intent, _, customer, agent in exchanges:
            messages.append({"role": "customer", "content": customer, "intent": intent})
            messages.append({"role": "agent", "content": agent, "intent": intent})
        records.append({
            "id": f"conv-{index:0{width}d}",
            "intent": exchanges[0][0],
            "slots": exchanges[0][1],
            "messages": messages,
        })
    return records


# ---------------------------------------------------------------------------------------------
# Probes (design §7): INV paraphrase groups, DIR entity swaps, MFT novel prompts
# ---------------------------------------------------------------------------------------------

CHAPTER_BALANCE_PROMPTS: tuple[str, ...] = (
    "What is my account balance?", "What is my savings balance?", "What is my credit balance?",
)
CHAPTER_NOVEL_PROMPT = "What is your overdraft fee?"

# DIR triples: intents whose request names an account type, and how many slot draws per
# held-out template (balance requests have no other slot, so one draw each).
_DIR_DRAWS = {
    "check_balance": 1, "transfer_money": 3, "monthly_fee": 1, "open_account": 1,
    "close_account": 1, "statement_request": 1,
}
_INV_EXTRA_GROUPS = {"check_balance": 2, "transfer_money": 2}  # more groups for core intents
_MFT_PER_INTENT = 2


def _entity(intent: str, slots: dict[str, str]) -> str | None:
    if "account_type" in slots:
        return slots["account_type"]
    if slots.get("card") == "credit card":
        return "credit card"
    return INTENT_ENTITY.get(intent)


def synthesize_probes(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Generate the probe sets ``{"inv": [...], "dir": [...], "mft": [...]}`` (deterministic).

    Every prompt comes from :data:`HELDOUT_PHRASINGS`, so none occurs in the corpus. Records
    follow ``schemas/probes.schema.json``.
    """
    rng = random.Random(f"bankllm-probes-{seed}")
    requests = tuple(i for i in INTENTS if i != CLOSING_INTENT)

    inv: list[dict[str, Any]] = []

    def add_group(intent: str, templates: tuple[str, ...], slots: dict[str, str]) -> None:
        inv.append({
            "id": f"inv-{len(inv) + 1:03d}",
            "intent": intent,
            "entity": _entity(intent, slots),
            "prompts": [render_prompt(t, slots) for t in templates],
        })

    generic_balance = tuple(
        t for t in HELDOUT_PHRASINGS["check_balance"] if not template_slots(t)
    )
    add_group("check_balance", generic_balance, {})
    for intent in requests:
        full = intent_slots(intent)
        templates = tuple(t for t in HELDOUT_PHRASINGS[intent] if template_slots(t) == full)
        draws = 1 + _INV_EXTRA_GROUPS.get(intent, 0)
        used: list[dict[str, str]] = []
        for k in range(draws):
            if intent == "check_balance":  # one group per account type
                slots = {"account_type": ACCOUNT_TYPES[k % len(ACCOUNT_TYPES)]}
            else:
                slots = _draw_slots(rng, full)
                while slots in used and full:
                    slots = _draw_slots(rng, full)
            used.append(slots)
            add_group(intent, templates, slots)

    dir_: list[dict[str, Any]] = []
    for intent, draws in _DIR_DRAWS.items():
        full = intent_slots(intent)
        templates = tuple(t for t in HELDOUT_PHRASINGS[intent] if template_slots(t) == full)
        for template in templates:
            for _ in range(draws):
                base = _draw_slots(rng, full)
                dir_.append({
                    "id": f"dir-{len(dir_) + 1:03d}",
                    "intent": intent,
                    "variants": [
                        {"entity": acct,
                         "prompt": render_prompt(template, {**base, "account_type": acct})}
                        for acct in ACCOUNT_TYPES
                    ],
                })

    mft: list[dict[str, Any]] = []
    seen: set[str] = set()
    for intent in requests:
        templates = list(HELDOUT_PHRASINGS[intent])
        picks = rng.sample(templates, _MFT_PER_INTENT)
        if intent == "overdraft_fee" and CHAPTER_NOVEL_PROMPT not in picks:
            picks[0] = CHAPTER_NOVEL_PROMPT
        for template in picks:
            slots = _draw_slots(rng, template_slots(template))
            prompt = render_prompt(template, slots)
            if prompt in seen:
                continue
            seen.add(prompt)
            entity = _entity(intent, slots)
            mft.append({
                "id": f"mft-{len(mft) + 1:03d}",
                "intent": intent,
                "entity": entity,
                "prompt": prompt,
            })
    return {"inv": inv, "dir": dir_, "mft": mft}


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

PROBE_FILES: dict[str, str] = {"inv": "inv.jsonl", "dir": "dir.jsonl", "mft": "mft.jsonl"}
"""File name of each probe kind inside the probes directory."""


def cli_synth(args: Any) -> int:
    """``bankllm data synth``: write the corpus (and probes unless ``--probes-dir ''``)."""
    from bankllm.errors import BankLLMError
    from bankllm.fileio import atomic_write_jsonl, load_schema, validate_json

    if args.n < 1:
        raise BankLLMError(f"--n must be at least 1, got {args.n}")
    records = synthesize_corpus(seed=args.seed, n=args.n)
    schema = load_schema("bankllm", "conversation.schema.json")
    for record in records:
        validate_json(record, schema, f"generated {record['id']}")
    output = Path(args.output)
    try:
        atomic_write_jsonl(output, records)
    except OSError as exc:
        raise BankLLMError(f"{output}: cannot write corpus ({exc})") from None
    lengths = Counter(len(r["messages"]) // 2 for r in records)
    summary = (
        f"wrote {len(records)} conversations to {output} "
        f"({len({r['intent'] for r in records})} intents; exchanges "
        + ", ".join(f"{k}: {lengths[k]}" for k in sorted(lengths)) + ")"
    )
    if args.probes_dir:
        probes = synthesize_probes(seed=args.seed)
        directory = Path(args.probes_dir)
        try:
            for kind, name in PROBE_FILES.items():
                atomic_write_jsonl(directory / name, probes[kind])
        except OSError as exc:
            raise BankLLMError(f"{directory}: cannot write probes ({exc})") from None
        summary += "; probes " + ", ".join(
            f"{len(probes[k])} {k}" for k in PROBE_FILES
        ) + f" in {directory}"
    print(summary, file=sys.stdout)
    return 0
